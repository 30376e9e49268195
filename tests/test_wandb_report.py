"""The W&B Report of a study, built and "published" offline: no network, no credentials."""
import re

import pytest
import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.reports.v2.interface as wr_interface
from wandb_workspaces import expr

from codesearch.errors import UserError
from report.wandb_report import build_report, publish_report

ENTITY, PROJECT, STUDY = "heads-team", "codebert-heads", "minilm-stdlib-python-test-1a2b3c4d"
FULL = ["baseline", "ablation", "aggregate", "prune"]


def grids(report):
    return [b for b in report.blocks if isinstance(b, wr.PanelGrid)]


def panels(report, kind):
    return [p for g in grids(report) for p in g.panels if isinstance(p, kind)]


def parsed_filter(runset) -> dict:
    """The runset's filter as W&B will read it: {backend key name: (op, value)}."""
    tree = expr.expr_to_filters(runset.filters)
    leaves = tree.filters if tree.op == "AND" else [tree]
    return {leaf.key.name: (leaf.op, leaf.value) for leaf in leaves}


def runset_of(report, panel_type):
    grid = next(g for g in grids(report) if any(isinstance(p, panel_type) for p in g.panels))
    (runset,) = grid.runsets
    return runset


def test_full_study_report_selects_the_group_and_has_every_panel(monkeypatch):
    def no_api():
        raise AssertionError("building the report asked W&B")

    monkeypatch.setattr(wr_interface, "_get_api", no_api)
    report = build_report(ENTITY, PROJECT, STUDY, "Heads of MiniLM", "What the heads do", FULL)
    assert (report.entity, report.project, report.title) == (ENTITY, PROJECT, "Heads of MiniLM")
    assert report.description == "What the heads do"
    assert isinstance(report.blocks[0], wr.H1) and STUDY in report.blocks[0].text

    runsets = [rs for g in grids(report) for rs in g.runsets]
    assert len(runsets) == 3  # head map, pruning, all runs
    for runset in runsets:
        assert (runset.entity, runset.project) == (ENTITY, PROJECT)
        assert parsed_filter(runset)["group"] == ("=", STUDY)

    (parallel,) = panels(report, wr.ParallelCoordinatesPlot)
    assert [c.metric for c in parallel.columns] == [wr.SummaryMetric(n) for n in
                                                    ("head/layer", "head/index", "eval/delta_mrr")]
    # The panel alone serializes offline: its axes read the runs' summaries.
    assert [c.accessor for c in parallel._to_model().config.columns] == [
        "summary:head/layer", "summary:head/index", "summary:eval/delta_mrr"]
    assert parsed_filter(runset_of(report, wr.ParallelCoordinatesPlot))["jobType"] == ("IN", ["ablation", "aggregate"])

    (scatter,) = panels(report, wr.ScatterPlot)
    assert (scatter.x, scatter.y) == (wr.SummaryMetric("grad/score"), wr.SummaryMetric("eval/delta_mrr"))
    media = {key for p in panels(report, wr.MediaBrowser) for key in p.media_keys}
    assert {"heatmap", "prune/interactions"} <= media
    assert [t.table_name for t in panels(report, wr.WeavePanelSummaryTable)] == ["importance"]

    (curve,) = panels(report, wr.LinePlot)
    assert curve.x == "prune/fraction_pruned"
    assert re.fullmatch(curve.metric_regex, "prune/mrr/random-3")
    assert not re.fullmatch(curve.metric_regex, "prune/fraction_pruned")
    assert parsed_filter(runset_of(report, wr.LinePlot))["jobType"] == ("IN", ["prune", "aggregate"])

    comparer_runset = runset_of(report, wr.RunComparer)
    assert parsed_filter(comparer_runset) == {"group": ("=", STUDY)}  # every run of the study, any job type


def test_baseline_only_study_leaves_out_head_map_and_prune_panels():
    report = build_report(ENTITY, PROJECT, STUDY, "Baseline", "", ["baseline"])
    for kind in (wr.ParallelCoordinatesPlot, wr.ScatterPlot, wr.MediaBrowser, wr.WeavePanelSummaryTable,
                 wr.LinePlot):
        assert panels(report, kind) == [], kind
    (grid,) = grids(report)
    assert [type(p) for p in grid.panels] == [wr.RunComparer]
    assert parsed_filter(grid.runsets[0]) == {"group": ("=", STUDY)}


def test_ablation_without_prune_has_no_prune_panels():
    report = build_report(ENTITY, PROJECT, STUDY, "Ablation", "", ["baseline", "ablation"])
    assert panels(report, wr.LinePlot) == []
    assert len(panels(report, wr.ParallelCoordinatesPlot)) == 1
    assert parsed_filter(runset_of(report, wr.ParallelCoordinatesPlot))["jobType"] == ("IN", ["ablation"])


def test_whole_report_serializes_to_a_spec_filtered_on_the_group(monkeypatch):
    """The report W&B would receive, built offline: the project lookup each runset makes is stubbed."""
    lookups = []

    def fake_graphql(api, query, variables):
        lookups.append(variables)
        return {"project": {"internalId": "project-id"}}

    monkeypatch.setattr(wr_interface, "_get_api", lambda: None)
    monkeypatch.setattr(wr_interface, "execute_graphql", fake_graphql)
    report = build_report(ENTITY, PROJECT, STUDY, "Heads", "", FULL)
    spec = report._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")

    run_sets = [rs for block in spec["spec"]["blocks"] if block["type"] == "panel-grid"
                for rs in block["metadata"]["runSets"]]
    assert len(run_sets) == 3
    assert lookups == [{"entityName": ENTITY, "projectName": PROJECT}] * 3
    for rs in run_sets:
        assert rs["project"] == {"name": PROJECT, "entityName": ENTITY, "id": "project-id"}
        groups = [f for f in rs["filters"]["filters"] if f["key"] == {"section": "run", "name": "group"}]
        assert [(f["op"], f["value"]) for f in groups] == [("=", STUDY)]


def test_a_study_name_with_quotes_survives_the_filter():
    study = "it's \"quoted\""
    report = build_report(ENTITY, PROJECT, study, "Quotes", "", ["baseline"])
    assert parsed_filter(grids(report)[0].runsets[0])["group"] == ("=", study)


@pytest.mark.parametrize("study", ["a=b", "x<y", "x>y"])
def test_a_study_name_the_filter_would_rewrite_is_refused(study):
    with pytest.raises(UserError, match="cannot be written"):
        build_report(ENTITY, PROJECT, study, "T", "", ["baseline"])


def test_unknown_kinds_and_missing_entity_are_refused():
    with pytest.raises(UserError, match="unknown run kinds"):
        build_report(ENTITY, PROJECT, STUDY, "T", "", ["baseline", "ablations"])
    with pytest.raises(UserError, match="entity and a project"):
        build_report("", PROJECT, STUDY, "T", "", ["baseline"])


def test_publish_uses_the_given_save_and_never_the_network(monkeypatch):
    def no_network(self, *args, **kwargs):
        raise AssertionError("Report.save reached")

    monkeypatch.setattr(wr.Report, "save", no_network)
    saved = []

    def fake_save(report):
        saved.append(report)
        return "https://wandb.example/heads-team/codebert-heads/reports/Heads--abc"

    url = publish_report(ENTITY, PROJECT, STUDY, "Heads", "d", FULL, save=fake_save)
    assert url == "https://wandb.example/heads-team/codebert-heads/reports/Heads--abc"
    (report,) = saved
    assert isinstance(report, wr.Report) and (report.entity, report.project) == (ENTITY, PROJECT)
    assert all(parsed_filter(rs)["group"] == ("=", STUDY) for g in grids(report) for rs in g.runsets)


def test_publish_by_default_saves_the_report_and_returns_its_url(monkeypatch):
    """Without `save`: report.save() (stubbed here: it would upsert the view) then W&B's own report.url."""
    saved = []

    def fake_report_save(self, draft=False, clone=False):
        saved.append(self)
        self.id = "abc123"
        return self

    monkeypatch.setattr(wr.Report, "save", fake_report_save)
    monkeypatch.setattr(wr_interface, "_get_api", lambda: None)
    monkeypatch.setattr(wr_interface, "get_app_url", lambda api: "https://wandb.example")
    url = publish_report(ENTITY, PROJECT, STUDY, "Heads of MiniLM", "", ["baseline"])
    assert len(saved) == 1
    assert url == f"https://wandb.example/{ENTITY}/{PROJECT}/reports/Heads-of-MiniLM--abc123"
