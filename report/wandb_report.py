"""A study published as a W&B Report, in the study's own W&B project.

A study is a W&B group: every run of it is logged with `group=<study>` and a `job_type` naming its role. The report
shows that group only, through runsets filtered on it; building the report needs no network and no credentials,
only `publish_report`'s save does.
"""
from __future__ import annotations

import warnings
from typing import Callable

import wandb_workspaces.reports.v2 as wr
from wandb_workspaces import expr

from codesearch.errors import UserError

# The roles a run of a study can have (its W&B job_type), as `tracking.run_logs` logs them.
JOB_TYPES = ("baseline", "ablation", "aggregate", "prune", "probe", "attention", "finetune", "compare")

# Kinds of runs that log the head map (one head per sweep run in the summary, the importance table and the heatmap);
# `aggregate` also names the merged prune sweep, which logs the pruning curve.
HEAD_MAP_KINDS = ("ablation", "aggregate")
PRUNE_KINDS = ("prune", "aggregate")


def study_filter(study: str, job_types: tuple[str, ...] = ()) -> str:
    """The runset filter selecting the study's runs (of these job types, when given).

    This version of wandb-workspaces keeps filters as a Python-like string and parses it again on save, after
    rewriting every `=`, `<` and `>` in it, those inside quoted values too; so a name that would not come back
    intact is refused here rather than silently selecting another group."""
    text = f'Metric("Group") == {study!r}'
    if job_types:
        text += f' and Metric("JobType") in {list(job_types)!r}'
    with warnings.catch_warnings():  # its note on rewriting '<' is replaced by the error below
        warnings.simplefilter("ignore", UserWarning)
        parsed = expr.expr_to_filters(text)
    group = parsed.filters[0] if parsed.op == "AND" else parsed
    if group.value != study:
        raise UserError(f"study name {study!r} cannot be written as a W&B report filter (avoid '=', '<' and '>')")
    return text


def _runset(entity: str, project: str, study: str, name: str, job_types: tuple[str, ...] = ()) -> wr.Runset:
    return wr.Runset(entity=entity, project=project, name=name, filters=study_filter(study, job_types))


def _head_map_grid(entity: str, project: str, study: str, kinds: tuple[str, ...]) -> list:
    # Summary metrics (not history): a sweep's run holds its one head's numbers in its summary, one point per run.
    columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(name), display_name=label)
               for name, label in (("head/layer", "layer"), ("head/index", "head"), ("eval/delta_mrr", "ΔMRR"))]
    panels = [
        wr.ParallelCoordinatesPlot(title="Head map: layer, head and ΔMRR", columns=columns,
                                   layout=wr.Layout(x=0, y=0, w=24, h=8)),
        wr.ScatterPlot(title="Gradient score against exact ΔMRR", x=wr.SummaryMetric("grad/score"),
                       y=wr.SummaryMetric("eval/delta_mrr"), regression=True, layout=wr.Layout(x=0, y=8, w=12, h=8)),
        wr.MediaBrowser(title="ΔMRR heatmap", media_keys=["heatmap"], num_columns=1,
                        layout=wr.Layout(x=12, y=8, w=12, h=8)),
        wr.WeavePanelSummaryTable(table_name="importance", layout=wr.Layout(x=0, y=16, w=24, h=12)),
    ]
    return [
        wr.H2(text="Which heads matter"),
        wr.P(text="Each point is one ablated head (layer, head, ΔMRR against the baseline); the heatmap and the "
                  "importance table hold every condition with its paired test."),
        wr.PanelGrid(runsets=[_runset(entity, project, study, f"{study}: {' + '.join(kinds)}", kinds)],
                     panels=panels),
    ]


def _prune_grid(entity: str, project: str, study: str, kinds: tuple[str, ...]) -> list:
    panels = [
        # One history line per pruning order (prune/mrr/<order>), whichever orders the run had.
        wr.LinePlot(title="MRR against the fraction of heads pruned", x="prune/fraction_pruned",
                    metric_regex="prune/mrr/.*", title_x="fraction pruned", title_y="MRR",
                    layout=wr.Layout(x=0, y=0, w=12, h=8)),
        wr.MediaBrowser(title="Pruning figures", media_keys=["prune/curve", "prune/layer_heads", "prune/interactions"],
                        layout=wr.Layout(x=12, y=0, w=12, h=8)),
    ]
    return [
        wr.H2(text="Pruning"),
        wr.P(text="How far the MRR holds as heads are pruned in each order, and how the top heads interact."),
        wr.PanelGrid(runsets=[_runset(entity, project, study, f"{study}: {' + '.join(kinds)}", kinds)],
                     panels=panels),
    ]


def build_report(entity: str, project: str, study: str, title: str, description: str,
                 sections: list[str]) -> wr.Report:
    """The report object (no network): an intro naming the study, the head map when the study has ablation or
    aggregate runs, the pruning curves when it has prune runs, and a comparison of all its runs. `sections`: the kinds
    of runs (job types) the study has; panels for kinds it lacks are left out."""
    if not entity or not project:
        # An empty entity would make the report ask W&B for the default one: the caller resolves it first.
        raise UserError("a W&B report needs an entity and a project")
    unknown = sorted(set(sections) - set(JOB_TYPES))
    if unknown:
        raise UserError(f"unknown run kinds {unknown}; expected some of {list(JOB_TYPES)}")
    kinds = [k for k in JOB_TYPES if k in sections]

    blocks: list = [
        wr.H1(text=f"Study {study}"),
        wr.P(text=f"The runs of W&B group {study} in {entity}/{project} ({', '.join(kinds) or 'none listed'}), read "
                  "live from W&B: which attention heads the code retriever needs, and how its runs compare."),
    ]
    head_map = tuple(k for k in HEAD_MAP_KINDS if k in kinds)
    if head_map:
        blocks += _head_map_grid(entity, project, study, head_map)
    if "prune" in kinds:
        blocks += _prune_grid(entity, project, study, tuple(k for k in PRUNE_KINDS if k in kinds))
    blocks += [
        wr.H2(text="All runs"),
        wr.PanelGrid(runsets=[_runset(entity, project, study, study)],
                     panels=[wr.RunComparer(diff_only="split", layout=wr.Layout(x=0, y=0, w=24, h=10))]),
    ]
    return wr.Report(entity=entity, project=project, title=title, description=description, blocks=blocks)


def _save_online(report: wr.Report) -> str:
    report.save()  # the network call; it sets report.id, from which report.url is made
    return report.url


def publish_report(entity: str, project: str, study: str, title: str, description: str, sections: list[str],
                   save: Callable[[wr.Report], str] | None = None) -> str:
    """Build and save the report; returns its URL. `save(report)` saves it and returns its URL; by default
    `report.save()` then `report.url` (W&B's own URL property cannot be set, so a fake returns the URL)."""
    report = build_report(entity, project, study, title, description, sections)
    return (save or _save_online)(report)
