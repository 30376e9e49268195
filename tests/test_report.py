"""`codebert-heads report`: one self-contained page of a study's runs. Its numbers are the run folders' own; it
opens in a real headless browser with no console error and no network request; a study with only an evaluation
renders too, saying how to make each missing part; online, the W&B Report's URL lands in run.json."""
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from browser import chromium, render
from test_probing import probe_corpus  # noqa: F401  (the fixture: a corpus with train, valid and test splits)

import experiments.report as report_command
from experiments.cli import main

FAST = ["ablation.n_bootstrap=300", "ablation.n_permutations=300", "progress=false", "model.batch_size=5"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


class Cells(HTMLParser):
    """Every element carrying data-value, with its table's id: what a reader's page holds."""

    def __init__(self):
        super().__init__()
        self.tables: list[str] = []
        self.cells: dict[str, list[dict]] = {}
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "table":
            self.tables.append(attrs.get("id", ""))
        if tag == "td" and "data-value" in attrs and self.tables:
            self.cells.setdefault(self.tables[-1], []).append(attrs)

    def handle_endtag(self, tag):
        if tag == "table" and self.tables:
            self.tables.pop()


def parsed(page: Path) -> Cells:
    cells = Cells()
    cells.feed(page.read_text())
    return cells


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_bert_dir):
    """A study with an evaluation, a whole single-head map and a pruning run."""
    from conftest import CODES, QUERIES

    root = tmp_path_factory.mktemp("study")
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": q, "code": c, "id": f"q{i}"}) + "\n"
                             for i, (q, c) in enumerate(zip(QUERIES, CODES))))
    common = [f"data.path={pairs}", f"model.name={tiny_bert_dir}", f"runs_dir={root / 'runs'}", *FAST]
    assert main(["evaluate", *common]) == 0
    assert main(["ablate", *common, "ablation.alpha=0.5"]) == 0
    assert main(["prune", *common, "prune.orders=[exact,random]", "prune.steps=[0.5,1.0]",
                 "prune.layer_heads=false", "prune.interactions=3"]) == 0
    [folder] = (root / "runs").iterdir()
    return folder


def direct_attention(model_dir, query, code, layer, head):
    """[query tokens, code tokens] of one head, from transformers itself (eager attention, the pair encoding)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    encoded = tokenizer(query, code, return_tensors="pt")
    with torch.no_grad():
        weights = model(**encoded, output_attentions=True).attentions[layer][0, head].numpy()
    ids = encoded.sequence_ids(0)
    return weights[np.ix_([i for i, s in enumerate(ids) if s == 0], [i for i, s in enumerate(ids) if s == 1])]


def test_the_pages_numbers_are_the_run_folders(study, tmp_path, tiny_bert_dir):
    from conftest import CODES, QUERIES

    assert main(["report", str(study), "wandb.mode=disabled"]) == 0
    page = study / "report" / "index.html"
    cells = parsed(page)
    importance = pd.read_csv(next((study / "ablate").iterdir()) / "importance.csv")
    heatmap = {(int(c["data-row"]), int(c["data-column"])): float(c["data-value"])
               for c in cells.cells["ablation-heatmap"]}
    assert len(heatmap) == len(importance) == 8
    for row in importance.itertuples():
        assert heatmap[(row.layer, row.head)] == row.delta_mrr   # the exact float, not a rounding
    significant = importance[importance["significant"]].sort_values("delta_mrr")
    shown = [c["data-value"] for c in cells.cells.get("significant-heads", []) if c["data-column"] == "condition"]
    assert shown == significant["condition"].tolist()
    metrics = json.loads((study / "evaluate" / "metrics.json").read_text())
    baseline = {c["data-column"]: c["data-value"] for c in cells.cells["baseline"][:7]}
    first = next(iter(metrics["protocols"].values()))
    assert float(baseline["mrr"]) == first["mrr"] and float(baseline["recall_at_5"]) == first["recall_at_5"]
    retention = pd.read_csv(next((study / "prune").iterdir()) / "retention.csv")
    fractions = [float(c["data-value"]) for c in cells.cells["retention"] if c["data-column"] == "fraction_pruned"]
    assert fractions == retention.loc[retention["criterion"] != "no significant drop", "fraction_pruned"].tolist()
    text = page.read_text()
    # How it was made: each run's command line, the settings that differ from the defaults.
    commands = re.search(r'<pre id="commands">(.*?)</pre>', text, re.S).group(1)
    assert "codebert-heads evaluate" in commands and "codebert-heads ablate" in commands
    assert "ablation.alpha=0.5" in commands and "prune.interactions=3" in commands
    assert "runs_dir" not in commands and "progress" not in commands
    # The parts the study lacks, each with the command that makes it.
    for kind in ("probe", "attention", "finetune", "compare"):
        assert f'id="missing-{kind}"' in text
    assert 'id="missing-ablate"' not in text
    record = json.loads((study / "report" / "run.json").read_text())
    assert record["sections"] == ["evaluate", "ablate", "prune"] and record["wandb_report"] == ""
    # The most important head's attention on the first pair, against the model run directly.
    top = importance.sort_values(["delta_mrr", "layer", "head"]).iloc[0]
    view = re.search(rf'<svg class="head-view" id="head-view-{top["condition"]}-0".*?</svg>', text, re.S).group(0)
    links = re.findall(r'<g class="query-token" data-query="(\d+)">(.*?)</g>', view, re.S)
    assert links
    attention = direct_attention(tiny_bert_dir, QUERIES[0], CODES[0], int(top["layer"]), int(top["head"]))
    for query, group in links:
        for code, weight in re.findall(r'data-code="(\d+)" data-weight="([^"]+)"', group):
            assert float(weight) == pytest.approx(attention[int(query), int(code)], abs=1e-6)
        assert len(re.findall("<line", group)) == 3   # each query token's three strongest links
    # Self-contained: no external script, stylesheet, font or image.
    assert not re.search(r'(src|href)="(https?:)?//', text)


@pytest.mark.skipif(chromium() is None, reason="no Chromium on this machine (.ci/run installs Debian's chromium)")
def test_the_page_renders_in_a_headless_browser(study):
    assert main(["report", str(study), "wandb.mode=disabled"]) == 0
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    rendered = render(study / "report" / "index.html", screenshot=shot)
    assert rendered.console_errors == [] and rendered.requests == []
    assert shot.stat().st_size > 10_000
    importance = pd.read_csv(next((study / "ablate").iterdir()) / "importance.csv")
    # What the reader sees: each head's ΔMRR × 100 in the heatmap, as the CSV has it.
    for value in importance["delta_mrr"]:
        assert f"{value * 100:+.1f}" in rendered.text
    assert "Which heads retrieval needs" in rendered.text and "Not in this study yet" in rendered.text


@pytest.mark.skipif(chromium() is None, reason="no Chromium on this machine (.ci/run installs Debian's chromium)")
def test_a_study_with_only_an_evaluation_renders_with_what_is_missing(tmp_path, pairs_file, tiny_bert_dir):
    assert main(["evaluate", f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"runs_dir={tmp_path}",
                 *FAST]) == 0
    [folder] = [p for p in tmp_path.iterdir() if (p / "evaluate").is_dir()]
    assert main(["report", str(folder), "wandb.mode=disabled"]) == 0
    rendered = render(folder / "report" / "index.html")
    assert rendered.console_errors == [] and rendered.requests == []
    for command in ("codebert-heads ablate", "codebert-heads probe", "codebert-heads attention",
                    "codebert-heads prune", "codebert-heads finetune"):
        assert command in rendered.text
    assert "Baseline retrieval" in rendered.text and "head ablation" in rendered.text


def test_the_study_of_the_settings_when_none_is_given(study, monkeypatch):
    """`codebert-heads report --config demo` (no study): the study those settings name."""
    monkeypatch.setattr(report_command, "study_dir", lambda _cfg: study)
    assert main(["report", "wandb.mode=disabled"]) == 0
    assert json.loads((study / "report" / "run.json").read_text())["study_folder"] == str(study)


def test_a_folder_with_no_run_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "holds no finished run" in capsys.readouterr().err
    assert not (tmp_path / "empty" / "report").exists()


def test_online_the_wandb_reports_url_is_recorded(study, monkeypatch, capsys):
    published = []

    def fake_publish(entity, project, group, title, description, sections):
        assert entity == "heads-team"
        wandb_report.build_report(entity, project, group, title, description, sections)   # the real one accepts them
        published.append((project, group, sections))
        return f"https://wandb.ai/{project}/reports/{group}"
    import report.wandb_report as wandb_report

    monkeypatch.setattr(wandb_report, "publish_report", fake_publish)
    monkeypatch.setattr(report_command, "resolve_mode", lambda _mode: "online")
    monkeypatch.setattr(report_command, "default_entity", lambda: "heads-team")
    assert main(["report", str(study), "wandb.mode=online"]) == 0
    assert published == [("codebert-heads", study.name, ["baseline", "ablation", "prune"])]
    record = json.loads((study / "report" / "run.json").read_text())
    assert record["wandb_report"] == f"https://wandb.ai/codebert-heads/reports/{study.name}"
    assert record["wandb_report"] in capsys.readouterr().out


@pytest.mark.skipif(chromium() is None, reason="no Chromium on this machine (.ci/run installs Debian's chromium)")
def test_probes_and_attention_sections(tmp_path, probe_corpus, tiny_bert_dir):  # noqa: F811  (the fixture)
    common = [f"data.path={probe_corpus}", f"model.name={tiny_bert_dir}", f"runs_dir={tmp_path / 'runs'}",
              "progress=false", "model.batch_size=8", "wandb.mode=disabled"]
    assert main(["ablate", *common, "ablation.n_bootstrap=200", "ablation.n_permutations=200"]) == 0
    assert main(["probe", *common, "task=in_loop", "probe.seeds=1", "probe.steps=20"]) == 0
    assert main(["attention", *common, "attention.n_permutations=100", "attention.js_examples=4",
                 "attention.max_clusters=3"]) == 0
    (study,) = (tmp_path / "runs").iterdir()
    assert main(["report", str(study), *common[2:]]) == 0
    page = study / "report" / "index.html"
    rendered = render(page)
    assert rendered.console_errors == [] and rendered.requests == []
    assert "What the heads encode" in rendered.text and "Where the heads look" in rendered.text
    probes = pd.read_csv(next((study / "probe").iterdir()) / "probes.csv")
    cells = {(int(c["data-row"]), int(c["data-column"])): float(c["data-value"])
             for c in parsed(page).cells["probe-in_loop"]}
    for row in probes[probes["task"] == "in_loop"].itertuples():
        assert cells[(row.layer, row.head)] == row.selectivity
    heads = pd.read_csv(study / "attention" / "pair" / "heads.csv")
    cells = {(int(c["data-row"]), int(c["data-column"])): float(c["data-value"])
             for c in parsed(page).cells["attention-pair-q2c_mass"]}
    for row in heads.itertuples():
        assert cells[(row.layer, row.head)] == row.q2c_mass
    joined = {c["data-value"] for c in parsed(page).cells["heads-pair"] if c["data-column"] == "delta_mrr"}
    assert joined == {repr(float(v)) for v in heads["delta_mrr"]}
    record = json.loads((study / "report" / "run.json").read_text())
    assert record["sections"] == ["ablate", "probe", "attention"]


def test_finetune_and_comparison_sections(study, tmp_path, tiny_bert_dir):
    """A fine-tuning run and a comparison beside the study (records as those commands write them): their sections
    show the record's numbers and the comparison's maps. The study aggregated: the examples still use its model."""
    import shutil

    from conftest import CODES, QUERIES

    from comparison.record import CompareRecord
    from training.record import FinetuneRecord

    runs = tmp_path / "runs"
    copy = runs / study.name
    shutil.copytree(study, copy)
    tune = copy / "finetune" / "tuned"
    tune.mkdir(parents=True)
    pd.DataFrame({"epoch": [0, 1], "step": [10, 20], "train_loss": [2.5, 1.25], "val_mrr": [0.4, 0.55],
                  "lr": [1e-5, 0.0]}).to_csv(tune / "metrics.csv", index=False)
    FinetuneRecord(command="finetune", base_model="tiny", base_revision="r", recipe={}, model_folder="model",
                   model_revision="m", data={}, corpus_hash="c", n_train_pairs=10, n_valid_queries=5,
                   hyperparameters={}, steps=20, epochs_run=2, best_epoch=1, best_val_mrr=0.55,
                   test_mrr=0.5123).write(tune)
    compared = runs / "compare" / "base-vs-tuned"
    compared.mkdir(parents=True)
    shutil.copy(next((study / "ablate").iterdir()) / "heatmap.png", compared / "heatmap_difference.png")
    CompareRecord(command="compare", studies=[{"name": study.name}, {"name": "other"}], layers=2, heads=4,
                  mode="zero", side="both", paired=True, pairing="paired: the same 12 queries").write(compared)
    assert main(["aggregate", str(copy), "wandb.mode=disabled"]) == 0
    assert main(["report", str(copy), "wandb.mode=disabled"]) == 0
    text = (copy / "report" / "index.html").read_text()
    assert f"{copy / 'aggregate'}</code>" in text   # the map shown is the aggregate's
    importance = pd.read_csv(copy / "aggregate" / "importance.csv")
    top = importance.sort_values(["delta_mrr", "layer", "head"]).iloc[0]
    view = re.search(rf'<svg class="head-view" id="head-view-{top["condition"]}-0".*?</svg>', text, re.S).group(0)
    attention = direct_attention(tiny_bert_dir, QUERIES[0], CODES[0], int(top["layer"]), int(top["head"]))
    weights = re.findall(r'data-query="(\d+)">(.*?)</g>', view, re.S)
    query, group = weights[0]
    code, weight = re.findall(r'data-code="(\d+)" data-weight="([^"]+)"', group)[0]
    assert float(weight) == pytest.approx(attention[int(query), int(code)], abs=1e-6)
    assert "test MRR 0.5123" in text and "best validation MRR 0.5500 at epoch 1" in text
    values = [float(v) for v in re.findall(r'data-column="val_mrr" data-value="([^"]+)"', text)]
    assert values == [0.4, 0.55]
    assert f"{study.name} against other" in text and "paired: the same 12 queries" in text
    assert text.count("data:image/png;base64,") >= 3   # the training curve, the comparison's map, ...
    record = json.loads((copy / "report" / "run.json").read_text())
    assert {"finetune", "compare"} <= set(record["sections"]) and record["missing"] == ["probe", "attention"]
