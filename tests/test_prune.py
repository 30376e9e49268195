"""`codebert-heads prune`: head sets. Planted redundancy and synergy found; every curve point and layer row equal to
the model run whole with that set masked; the iterative order equal to a hand loop of gradients; shards aggregated
into the whole run's tables; resume; bad input refused before any encoding."""
import glob
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from statsmodels.stats.multitest import multipletests
from tiny_models import make_tiny_bert, plant_pair

import ablation.engine as engine
import ablation.prune_study as prune_study
import ablation.study as study
import experiments.ablate
import experiments.prune
import tracking.wandb_log as tracking
from ablation.head_sets import CurvePoint, SetPlan
from ablation.set_analysis import retention_table, set_tables
from ablation.settings import ReportSettings
from experiments.cli import main
from heads.hooks import HeadMask
from heads.models import load_encoder
from heads.naming import name_of_heads, parse_head_name, parse_head_set_name

FAST = ["ablation.n_bootstrap=500", "ablation.n_permutations=500", "progress=false", "model.batch_size=5"]
WORDS = tuple(f"w{i}" for i in range(40))


def run(command, *args) -> int:
    return main([command, *map(str, args), *FAST])


def study_folder(runs_dir: Path) -> Path:
    [folder] = glob.glob(str(runs_dir / "*/"))
    return Path(folder)


def prune_folder(runs_dir: Path) -> Path:
    [folder] = glob.glob(str(runs_dir / "*/prune/*/"))
    return Path(folder)


def set_name(*heads: str) -> str:
    return name_of_heads([parse_head_name(head) for head in heads], 4)


def wide(folder: Path) -> pd.DataFrame:
    per_query = pd.read_csv(folder / "per_query.csv", dtype={"query_id": str}, keep_default_na=False)
    return per_query.pivot(index="query_id", columns="condition", values="rr")


# ---------------------------------------------------------------------------- planted redundancy and synergy

@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A tiny BERT whose layer 0 passes information only through heads 0 and 1, copies of each other (either alone
    can go), and whose layer 1 only through heads 2 and 3, which work only together; and its corpus."""
    root = tmp_path_factory.mktemp("planted")
    folder = make_tiny_bert(root / "model", seed=1, words=WORDS)
    encoder = load_encoder(str(folder))
    plant_pair(encoder.model, 0, 0, 1, "redundant")
    plant_pair(encoder.model, 1, 2, 3, "synergistic")
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": f"find {w} now", "code": f"def f(): return {w}", "id": f"q{i}"})
                             + "\n" for i, w in enumerate(WORDS)))
    return folder, encoder, pairs


def test_planted_redundancy_and_synergy_are_found(tmp_path, planted, monkeypatch):
    folder, encoder, pairs = planted
    for module in (experiments.ablate, experiments.prune):
        monkeypatch.setattr(module, "encoder_for", lambda _model: encoder)
    runs = tmp_path / "runs"
    common = [f"data.path={pairs}", f"model.name={folder}", f"runs_dir={runs}"]
    assert run("ablate", *common) == 0
    assert run("prune", *common, "prune.orders=[exact]", "prune.steps=[0.5,1.0]", "prune.layer_heads=false",
               "prune.interactions=4", "prune.shapley_permutations=24") == 0
    importance = pd.read_csv(glob.glob(str(runs / "*/ablate/*/importance.csv"))[0]).set_index("condition")
    # Either twin alone: no change at all; each of the synergistic pair alone: the whole drop.
    assert importance.loc["L0H0", "delta_mrr"] == 0 and importance.loc["L0H1", "delta_mrr"] == 0
    assert importance.loc["L1H2", "delta_mrr"] < -0.15 and importance.loc["L1H3", "delta_mrr"] < -0.15
    out = prune_folder(runs)
    pairs_table = pd.read_csv(out / "interactions.csv", keep_default_na=False)
    by_pair = pairs_table.set_index(["a", "b"])
    assert set(by_pair.index) == {tuple(p) for p in itertools.combinations(["L1H2", "L1H3", "L0H0", "L0H1"], 2)}
    twins, together = by_pair.loc[("L0H0", "L0H1")], by_pair.loc[("L1H2", "L1H3")]
    assert twins["drop_a"] == 0 and twins["drop_b"] == 0 and twins["drop_ab"] > 0.15
    assert twins["interaction"] > 0.15 and twins["ci_low"] > 0 and twins["kind"] == "redundant"
    assert together["interaction"] < -0.15 and together["ci_high"] < 0 and together["kind"] == "synergistic"
    assert (pairs_table["kind"] != "").sum() == 2   # the mixed pairs: drop(a,b) = drop(a) + drop(b) exactly
    # Each pair's numbers recomputed from the per-query ranks with scipy and statsmodels.
    rr = wide(out)
    base = rr["baseline"].to_numpy()
    for row in pairs_table.itertuples():
        a, b, ab = rr[row.a].to_numpy(), rr[row.b].to_numpy(), rr[set_name(row.a, row.b)].to_numpy()
        interaction = a + b - ab - base
        assert row.interaction == pytest.approx(interaction.mean())
        assert row.drop_ab == pytest.approx(base.mean() - ab.mean())
        if np.ptp(interaction) > 1e-12:   # below: float noise of sums, no spread (p = 1)
            assert row.p_value == pytest.approx(stats.ttest_1samp(interaction, 0).pvalue)
    np.testing.assert_allclose(pairs_table["p_adjusted"], multipletests(pairs_table["p_value"], method="holm")[1])
    # Shapley values over all 4! permutations, against the subset formula on the measured drops.
    shapley = pd.read_csv(out / "shapley.csv").set_index("head")
    assert shapley["exact"].all() and (shapley["n_permutations"] == 24).all() and (shapley["se"] == 0).all()
    top = ["L1H2", "L1H3", "L0H0", "L0H1"]

    def drop(heads) -> float:
        return float(base.mean() - rr[set_name(*heads)].mean()) if heads else 0.0
    for head in top:
        others = [h for h in top if h != head]
        value = sum(math.factorial(len(s)) * math.factorial(len(top) - len(s) - 1) / math.factorial(len(top))
                    * (drop([*s, head]) - drop(s)) for k in range(len(top)) for s in itertools.combinations(others, k))
        assert shapley.loc[head, "shapley"] == pytest.approx(value)
    assert shapley["shapley"].sum() == pytest.approx(drop(top))
    assert (out / "interactions.png").stat().st_size > 1000


# ---------------------------------------------------------------------------- every point is a naive masked run

def naive_mrr(encoder, heads, mode, side, max_query_length=128, max_code_length=256, batch_size=5) -> float:
    """The whole model with the set masked (no cache, no reruns), ranked by hand: ties count against the gold."""
    from conftest import CODES, QUERIES

    embedded = {}
    for name, texts, length in (("query", QUERIES, max_query_length), ("code", CODES, max_code_length)):
        mask = HeadMask(heads, mode) if heads and side in (name, "both") else None
        embedded[name] = encoder.encode(texts, length, batch_size, hook=mask, progress=False)
    scores = embedded["query"] @ embedded["code"].T
    ranks = (scores >= scores.diag()[:, None]).sum(dim=1).double()
    return float((1 / ranks).mean())


@pytest.mark.parametrize("model,mode,side", [("tiny_bert_dir", "zero", "both"), ("tiny_bert_dir", "resample", "query"),
                                             ("tiny_roberta_dir", "zero", "code")])
def test_every_curve_point_and_layer_row_is_the_naive_masked_mrr(tmp_path, pairs_file, request, model, mode, side):
    model_dir = request.getfixturevalue(model)
    runs = tmp_path / "runs"
    common = [f"data.path={pairs_file}", f"model.name={model_dir}", f"runs_dir={runs}", f"ablation.mode={mode}",
              f"ablation.side={side}"]
    assert run("ablate", *common) == 0
    assert run("prune", *common, "prune.interactions=0", "prune.seeds=[0,1]") == 0
    out = prune_folder(runs)
    encoder = load_encoder(str(model_dir))
    curve = pd.read_csv(out / "curve.csv", keep_default_na=False)
    assert list(dict.fromkeys(curve["order"])) == ["exact", "gradient", "iterative", "random"]
    assert len(curve) == 5 * 9   # 4 orders (random with two seeds), 0 to 8 heads each
    baseline_mrr = naive_mrr(encoder, (), mode, side)
    for row in curve.itertuples():
        heads = parse_head_set_name(row.condition, 2, 4) if row.n_pruned else ()
        assert len(heads) == row.n_pruned
        assert row.mrr == pytest.approx(naive_mrr(encoder, heads, mode, side), abs=1e-12), row
        assert row.delta_mrr == pytest.approx(row.mrr - baseline_mrr, abs=1e-12)
    # Each order adds its heads in its own order: the exact order from the single-head table, least important first.
    importance = pd.read_csv(glob.glob(str(runs / "*/ablate/*/importance.csv"))[0])
    expected = importance.sort_values(["delta_mrr", "layer", "head"], ascending=[False, True, True])["condition"]
    exact = curve[curve["order"] == "exact"]
    assert exact["added"].tolist()[1:] == expected.tolist()
    layers = pd.read_csv(out / "layer_heads.csv", keep_default_na=False)
    assert len(layers) == 2 * (4 + 1) + 1
    for row in layers.itertuples():
        heads = parse_head_set_name(row.condition, 2, 4)
        assert row.mrr == pytest.approx(naive_mrr(encoder, heads, mode, side), abs=1e-12), row
    kept = layers[layers["kept"].str.match(r"L\dH\d")]
    for layer, rows in kept.groupby("layer"):
        assert rows.loc[rows["best"], "mrr"].item() == rows["mrr"].max()
    best = layers[layers["kept"] == "best"].iloc[0]
    assert set(parse_head_set_name(best["condition"], 2, 4)) == {
        parse_head_name(f"L{layer}H{h}") for layer in range(2) for h in range(4)} - {
        parse_head_name(name) for name in kept.loc[kept["best"], "kept"]}
    for name in ("curve.png", "layer_heads.png", "curve.md", "curve.tex", "retention.md", "layer_heads.tex"):
        assert (out / name).stat().st_size > 200, name


# ---------------------------------------------------------------------------- Michel's iterative order by hand

def hand_gradient(encoder, pruned, queries, codes, mode="zero", side="both", temperature=0.05, lengths=(128, 256),
                  batch_size=5):
    """-d loss / d mask with the pruned heads masked (on the masked side only, the gradient taken through it only):
    the whole pool's contrastive loss in one graph."""
    mask = torch.ones(encoder.n_layers, encoder.n_heads, requires_grad=True)
    pruned_mask = HeadMask(pruned, mode) if pruned else None

    def hook(layer, z, attention_mask):
        if pruned_mask is not None:
            replaced = pruned_mask(layer, z, attention_mask)
            z = z if replaced is None else replaced
        return z * mask[layer][None, None, :, None]
    embedded = []
    for name, texts, length in (("query", queries, lengths[0]), ("code", codes, lengths[1])):
        masked = side in (name, "both")
        rows = [None] * len(texts)
        for batch, embeddings in encoder.forward_batches(encoder.tokenize(texts, length), batch_size,
                                                         hook=hook if masked else None, grad=masked,
                                                         progress=False):
            for position, row in zip(batch.positions, embeddings):
                rows[position] = row
        embedded.append(torch.stack(rows).float())
    scores = embedded[0] @ embedded[1].T / temperature
    torch.nn.functional.cross_entropy(scores, torch.arange(len(queries))).backward()
    return (-mask.grad).numpy()


@pytest.mark.parametrize("mode,side", [("zero", "both"), ("resample", "query")])
def test_iterative_order_is_a_hand_loop_of_gradient_estimates(tmp_path, pairs_file, tiny_bert_dir, mode, side):
    from conftest import CODES, QUERIES

    runs = tmp_path / "runs"
    assert run("prune", f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"runs_dir={runs}",
               "prune.orders=[iterative]", "prune.steps=[0.25,0.5,0.75,1.0]", "prune.layer_heads=false",
               "prune.interactions=0", f"ablation.mode={mode}", f"ablation.side={side}") == 0
    out = prune_folder(runs)
    [plan] = json.loads((out / "plan.json").read_text())
    encoder = load_encoder(str(tiny_bert_dir))
    pruned, order = [], []
    for target in (2, 4, 6, 8):
        scores = hand_gradient(encoder, pruned, QUERIES, CODES, mode, side)
        remaining = sorted({parse_head_name(f"L{layer}H{h}") for layer in range(2) for h in range(4)} - set(pruned))
        chosen = sorted(remaining, key=lambda head: (scores[head.layer, head.index], head))[:target - len(pruned)]
        pruned, order = pruned + chosen, order + chosen
    assert plan["orders"]["iterative"] == [head.name for head in order]
    curve = pd.read_csv(out / "curve.csv", keep_default_na=False)
    assert curve["n_pruned"].tolist() == [0, 2, 4, 6, 8]
    assert curve["added"].tolist()[1:] == ["+".join(h.name for h in order[i:i + 2]) for i in (0, 2, 4, 6)]
    # The scores kept for each step are the hand loop's (the first step's is the study's gradient).
    kept = [json.loads(path.read_text()) for path in (out / "conditions").glob("iterative_gradient*.json")]
    assert len(kept) == 3
    for step in kept:
        heads = [parse_head_name(name) for name in step["pruned"]]
        np.testing.assert_allclose(step["scores"], hand_gradient(encoder, heads, QUERIES, CODES, mode, side),
                                   rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------------------- shards, resume, W&B

PLAN = ["prune.orders=[exact,gradient,random]", "prune.layer_heads=false", "prune.interactions=3",
        "prune.shapley_permutations=4", "prune.steps=[0.25,0.5,1.0]"]


def test_shards_aggregate_into_the_whole_runs_tables(tmp_path, pairs_file, tiny_bert_dir, capsys):
    common = [f"data.path={pairs_file}", f"model.name={tiny_bert_dir}"]
    for runs in ("whole", "shards"):
        assert run("ablate", *common, f"runs_dir={tmp_path / runs}") == 0
    assert run("prune", *common, *PLAN, f"runs_dir={tmp_path / 'whole'}") == 0
    for i in (1, 2, 3):
        assert run("prune", *common, *PLAN, f"runs_dir={tmp_path / 'shards'}", f"ablation.shard={i}/3") == 0
    shards = study_folder(tmp_path / "shards")
    first = sorted((shards / "prune").iterdir())[0]
    assert not (first / "curve.csv").exists() and (first / "plan.json").is_file()   # a shard makes no tables
    # One shard missing: said, nothing written.
    hidden = first.with_name(".hidden")
    first.rename(hidden)
    assert main(["aggregate", str(shards)]) == 2
    assert "measured by none of the runs" in capsys.readouterr().err
    hidden.rename(first)
    assert main(["aggregate", str(shards)]) == 0
    whole = prune_folder(tmp_path / "whole")
    for name in ("curve.csv", "retention.csv", "interactions.csv", "shapley.csv", "curve.md", "interactions.tex"):
        assert (shards / "aggregate-prune" / name).read_text() == (whole / name).read_text(), name
    assert (shards / "aggregate-prune" / "per_query.csv").read_text() == (whole / "per_query.csv").read_text()
    record = json.loads((shards / "aggregate-prune" / "run.json").read_text())
    assert record["command"] == "aggregate" and record["n_runs"] == 3


def test_steps_and_masking_modes_spread_over_runs_aggregate(tmp_path, pairs_file, tiny_bert_dir):
    """Runs of other steps merge into one curve (each point's added heads from the order itself); runs of other
    masking into one table with a row per way, the cited numbers per way."""
    common = [f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", "prune.layer_heads=false",
              "prune.interactions=0", "prune.orders=[exact,random]", "prune.seeds=[4]"]
    for runs in ("whole", "spread"):
        assert run("ablate", *common, f"runs_dir={tmp_path / runs}") == 0
    assert run("prune", *common, f"runs_dir={tmp_path / 'whole'}", "prune.steps=[0.25,0.5,0.75,1.0]") == 0
    for steps in ("[0.25,0.5]", "[0.75,1.0]"):
        assert run("prune", *common, f"runs_dir={tmp_path / 'spread'}", f"prune.steps={steps}") == 0
    spread = study_folder(tmp_path / "spread")
    assert main(["aggregate", str(spread)]) == 0
    whole = prune_folder(tmp_path / "whole")
    for name in ("curve.csv", "retention.csv", "curve.md"):
        assert (spread / "aggregate-prune" / name).read_text() == (whole / name).read_text(), name
    # Another way of masking in the same study: its rows beside, corrected together, cited apart.
    assert run("prune", *common, f"runs_dir={tmp_path / 'spread'}", "prune.steps=[0.5,1.0]",
               "prune.orders=[random]", "ablation.mode=resample", "ablation.side=query") == 0
    assert main(["aggregate", str(spread)]) == 0
    curve = pd.read_csv(spread / "aggregate-prune" / "curve.csv", keep_default_na=False)
    assert set(zip(curve["mode"], curve["side"])) == {("zero", "both"), ("resample", "query")}
    tested = curve[curve["n_pruned"] > 0].drop_duplicates(["mode", "side", "condition"])
    np.testing.assert_allclose(tested["p_adjusted"].astype(float),
                               multipletests(tested["p_value"].astype(float), method="holm")[1])
    findings = json.loads((spread / "aggregate-prune" / "run.json").read_text())["findings"]
    assert set(findings) == {"resample-query", "zero-both"}
    assert set(findings["resample-query"]["fraction_keeping_95"]) == {"random-4"}
    assert (spread / "aggregate-prune" / "curve-resample-query.png").is_file()


def test_an_interrupted_run_resumes_without_repeating_work(tmp_path, pairs_file, tiny_bert_dir, monkeypatch):
    common = [f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", "prune.orders=[exact,iterative]",
              "prune.steps=[0.25,0.5,0.75,1.0]", "prune.interactions=2"]
    for runs in ("straight", "interrupted"):
        assert run("ablate", *common, f"runs_dir={tmp_path / runs}") == 0
    assert run("prune", *common, f"runs_dir={tmp_path / 'straight'}") == 0
    original = prune_study.gradient_scores
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)
    monkeypatch.setattr(prune_study, "gradient_scores", interrupted)
    assert run("prune", *common, f"runs_dir={tmp_path / 'interrupted'}") == 130
    measured = []
    original_run = study.run_conditions

    def counting(encoder, query, code, conditions, *args, **kwargs):
        measured.extend(c.name for c in conditions)
        return original_run(encoder, query, code, conditions, *args, **kwargs)
    monkeypatch.setattr(study, "run_conditions", counting)
    reruns, engine_run = [], engine.run_conditions

    def counting_reruns(encoder, query, code, conditions, *args, **kwargs):
        reruns.extend(c.name for c in conditions)
        return engine_run(encoder, query, code, conditions, *args, **kwargs)
    monkeypatch.setattr(engine, "run_conditions", counting_reruns)
    calls.clear()
    monkeypatch.setattr(prune_study, "gradient_scores", lambda *a, **k: calls.append(1) or original(*a, **k))
    assert run("prune", *common, f"runs_dir={tmp_path / 'interrupted'}", "resume=true") == 0
    assert len(calls) == 2      # steps 3 and 4: step 2's scores were kept (the first step's is the study's)
    straight, resumed = prune_folder(tmp_path / "straight"), prune_folder(tmp_path / "interrupted")
    curve = pd.read_csv(resumed / "curve.csv", keep_default_na=False)
    # Only the iterative set of 6 heads was measured now (that of 8 is every head, measured by the exact order).
    assert measured == curve.loc[(curve["order"] == "iterative") & (curve["n_pruned"] == 6), "condition"].tolist()
    # ...and the set of 4 encoded again, once, for step 3's gradient (its ranks were kept, its embeddings not).
    assert reruns == curve.loc[(curve["order"] == "iterative") & (curve["n_pruned"] == 4), "condition"].tolist()
    for name in ("curve.csv", "layer_heads.csv", "interactions.csv"):
        assert (resumed / name).read_text() == (straight / name).read_text(), name


def test_wandb_shows_the_curve_as_a_line_plot(tmp_path, pairs_file, tiny_bert_dir, monkeypatch, capsys):
    logged, real = [], tracking._log
    monkeypatch.setattr(tracking, "_log", lambda *args: logged.append(args[-2]))
    runs = tmp_path / "runs"
    common = [f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"runs_dir={runs}"]
    assert run("ablate", *common) == 0
    assert run("prune", *common, *PLAN, "wandb.mode=offline") == 0
    log = logged[-1]
    assert log.job_type == "prune" and log.name.startswith("prune-")
    assert [step["prune/n_pruned"] for step in log.history] == [0, 2, 4, 8]
    assert set(log.history[1]) >= {"prune/mrr/exact", "prune/mrr/gradient", "prune/mrr/random-0"}
    plot = log.plots["prune/curve_chart"]
    assert plot.keys == ["exact", "gradient", "random-0", "random-1", "random-2"]
    assert plot.xs[0] == [0.0, 0.25, 0.5, 1.0] and len(plot.ys[0]) == 4
    assert "prune/fraction_keeping_95/exact" in log.summary
    assert set(log.tables) == {"curve", "retention", "interactions", "shapley"}
    monkeypatch.setattr(tracking, "_log", real)
    # And for real, offline: W&B takes the line plot.
    assert run("prune", *common, *PLAN, "wandb.mode=offline", "prune.seeds=[5]") == 0
    assert "W&B logging failed" not in capsys.readouterr().err
    assert glob.glob(str(study_folder(runs) / "wandb" / "offline-run-*"))


# ---------------------------------------------------------------------------- bad input, before any encoding

@pytest.mark.parametrize("overrides,message", [
    (["prune.orders=[exact]", "prune.interactions=3"], "has no such ablation"),
    (["prune.orders=[gradient]", "prune.rank_by=exact", "prune.interactions=3"], "has no such ablation"),
    (["prune.orders=[gradient]", "prune.interactions=9", "prune.rank_by=gradient"], "prune.interactions=9"),
    (["prune.orders=[random]", "prune.seeds=[]"], "prune.seeds is empty"),
    (["prune.orders=[random]", "prune.steps=[0.5,0.2]"], "not increasing"),
    (["prune.orders=[random]", "prune.seeds=[-1]"], "seeds are 0 or more"),
    (["prune.orders=[random]", "prune.interactions=1"], "one head makes no pair"),
    (["prune.orders=[]", "prune.layer_heads=false", "prune.interactions=0"], "nothing to measure"),
    (["prune.orders=[random]", "prune.steps=[0.2,1.5]"], "1.5 is no fraction"),
    (["prune.orders=[iterative]", "prune.interactions=0", "prune.layer_heads=false", "ablation.shard=1/2"],
     "cannot be sharded"),
    (["prune.orders=[exact]", "prune.interactions=3", "prune.ablation_run=nowhere"], "no importance.csv"),
])
def test_bad_input_is_refused_before_any_encoding(tmp_path, pairs_file, tiny_bert_dir, monkeypatch, capsys,
                                                  overrides, message):
    def must_not_run(*_args, **_kwargs):
        raise AssertionError("encoded before the input was checked")
    monkeypatch.setattr(study, "task_embeddings", must_not_run)
    assert run("prune", f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"runs_dir={tmp_path}",
               *overrides) == 2
    assert message in capsys.readouterr().err


def test_an_exact_order_needs_every_head_of_the_map(tmp_path, pairs_file, tiny_bert_dir, capsys):
    common = [f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"runs_dir={tmp_path}"]
    exact = ["prune.orders=[exact]", "prune.interactions=0", "prune.layer_heads=false", "prune.steps=[1.0]"]
    assert run("ablate", *common, "ablation.heads=0.*") == 0
    assert run("prune", *common, *exact) == 2
    assert "no single-head ΔMRR for 4 of the heads" in capsys.readouterr().err
    # A whole map, then a newer partial run: the whole map gives the order.
    assert run("ablate", *common) == 0
    assert run("ablate", *common, "ablation.heads=1.*") == 0
    assert run("prune", *common, *exact) == 0
    record = json.loads((prune_folder(tmp_path) / "run.json").read_text())
    assert Path(record["exact_source"]).name.startswith("all-zero-both-")
    # Ranked by the map, no curve asked for: pairs only.
    assert run("prune", *common, "prune.orders=[]", "prune.layer_heads=false", "prune.interactions=2",
               "output_dir=pairs") == 0
    [plan] = json.loads(Path("pairs/plan.json").read_text())
    assert plan["curve"] == [] and plan["orders"] == {} and len(plan["pairs"]) == 1
    assert not Path("pairs/curve.csv").exists() and Path("pairs/interactions.csv").is_file()


# ---------------------------------------------------------------------------- retention, worked by hand

def test_retention_is_the_last_point_before_the_curve_first_falls_below():
    mrrs = [0.8, 0.796, 0.768, 0.736, 0.76, 0.4]   # 100%, 99.5%, 96%, 92%, 95%, 50% of the baseline
    curve = pd.DataFrame({"mode": "zero", "side": "both", "order": "exact", "seed": pd.array([None] * 6, "Int64"),
                          "n_pruned": range(6), "fraction_pruned": np.arange(6) / 5, "mrr": mrrs,
                          "delta_mrr": np.array(mrrs) - 0.8, "significant": [False] * 4 + [True, True]})
    table = retention_table(curve, 0.8).set_index("criterion")
    assert table.loc["99% of baseline MRR", "n_pruned"] == 1
    assert table.loc["99% of baseline MRR", "first_failing_fraction"] == pytest.approx(0.4)
    assert table.loc["95% of baseline MRR", "n_pruned"] == 2   # not 4: the curve fell below 95% at 3 already
    assert table.loc["90% of baseline MRR", "n_pruned"] == 4
    assert table.loc["no significant drop", "n_pruned"] == 3


def test_tables_from_a_plan_by_hand():
    """A plan of two heads and every statistic of its tables, from rr arrays worked out here."""
    plan = SetPlan("zero", "both", 1, 2, ["L0H0", "L0H1"], orders={"exact": ["L0H0", "L0H1"]},
                   curve=[CurvePoint("exact", None, 0, "", ()), CurvePoint("exact", None, 1, "L0H0", ("L0H0",)),
                          CurvePoint("exact", None, 2, "L0H*", ("L0H1",))])
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 1, 50)
    rr = {"L0H0": base - rng.uniform(0, 0.05, 50), "L0H*": base * 0.5}
    settings = ReportSettings(n_bootstrap=200, n_permutations=200)
    curve = set_tables([(plan, rr)], base, settings).curve
    assert curve["mrr"].tolist() == pytest.approx([base.mean(), rr["L0H0"].mean(), rr["L0H*"].mean()])
    p = [stats.ttest_rel(rr[name], base).pvalue for name in ("L0H0", "L0H*")]
    assert curve["p_value"].tolist()[1:] == pytest.approx(p)
    assert curve["p_adjusted"].tolist()[1:] == pytest.approx(multipletests(p, method="holm")[1].tolist())
    assert np.isnan(curve["p_adjusted"].iloc[0]) and not curve["significant"].iloc[0]
