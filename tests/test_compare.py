"""`codebert-heads compare` end to end: every number recomputed from the compared runs' own files with scipy and
statsmodels called directly, the maps-only comparison of studies on different data, the pairwise matrix, refusals."""
import json
import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from statsmodels.stats.multitest import multipletests
from tiny_models import make_tiny_bert

from ablation.stats import condition_rng
from attention.record import AttentionRecord
from experiments.cli import main
from probing.record import ProbeRecord

FAST = ["compare.n_bootstrap=200", "compare.n_permutations=200"]
QUERIES = ["sum the values of a list", "reverse the characters of a string", "read a file into lines",
           "sort records by date", "count words in a text", "parse an integer from text", "join paths together",
           "compute the mean of numbers", "remove duplicates from a list", "check whether a number is prime"]
CODES = ["def f(xs): return sum(xs)", "def f(s): return s[::-1]", "def f(p): return open(p).read().split()",
         "def f(r): return sorted(r, key=lambda x: x.date)", "def f(t): return len(t.split())",
         "def f(t): return int(t)", "def f(a, b): return a + '/' + b", "def f(xs): return sum(xs) / len(xs)",
         "def f(xs): return list(dict.fromkeys(xs))", "def f(n): return all(n % d for d in range(2, n))"]


def write_pairs(path: Path, queries: list[str]) -> Path:
    path.write_text("".join(json.dumps({"query": q, "code": c, "id": f"q{i}"}) + "\n"
                            for i, (q, c) in enumerate(zip(queries, CODES))))
    return path


def ablate(runs: Path, model: Path, pairs: Path) -> Path:
    before = set(runs.iterdir()) if runs.is_dir() else set()
    assert main(["ablate", f"data.path={pairs}", f"model.name={model}", f"runs_dir={runs}", "progress=false",
                 "ablation.n_bootstrap=200", "ablation.n_permutations=200", "ablation.gradient=false",
                 "model.batch_size=4"]) == 0
    (study,) = set(runs.iterdir()) - before
    return study


def wide_bert(folder: Path, seed: int = 0, layers: int = 2) -> Path:
    """A tiny BERT (tests/tiny_models.py) with weights spread 25 times wider than BERT's: its heads move ranks, so
    that ablation maps vary."""
    from transformers import BertConfig, BertModel

    make_tiny_bert(folder, seed=seed, layers=layers)
    config = BertConfig.from_pretrained(folder)
    config.initializer_range = 0.5
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """A: a tiny BERT; B: the same grid, other weights, same pairs (paired with A); C: A's model on other pairs;
    D: a BERT of another grid (3 layers)."""
    root = tmp_path_factory.mktemp("compare")
    runs = root / "runs"
    pairs = write_pairs(root / "pairs.jsonl", QUERIES)
    other_pairs = write_pairs(root / "other-pairs.jsonl", [f"how to {q}" for q in QUERIES[::-1]])
    model = wide_bert(root / "tiny-bert")
    other_weights = wide_bert(root / "tiny-bert-seed1", seed=1)
    deeper = wide_bert(root / "tiny-bert-3-layers", layers=3)
    return {"runs": runs, "A": ablate(runs, model, pairs), "B": ablate(runs, other_weights, pairs),
            "C": ablate(runs, model, other_pairs), "D": ablate(runs, deeper, pairs)}


def compare(runs: Path, *studies: Path, extra: tuple = ()) -> Path:
    assert main(["compare", *[study.name for study in studies], f"runs_dir={runs}", "progress=false", *FAST,
                 *extra]) == 0
    return max((runs / "compare").iterdir(), key=lambda folder: folder.stat().st_mtime)


def ablation_files(study: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    (run,) = (study / "ablate").iterdir()
    per_query = pd.read_csv(run / "per_query.csv", dtype={"query_id": str})
    return pd.read_csv(run / "importance.csv"), per_query.pivot(index="query_id", columns="condition", values="rr")


def add_probes_and_attention(study: Path, seed: int) -> None:
    """A finished probe run and a finished attention run of the study, written as their commands write them."""
    rng = np.random.default_rng(seed)
    heads = [(layer, head) for layer in range(2) for head in range(4)]
    probes = pd.DataFrame([{"condition": f"L{layer}H{head}", "layer": layer, "head": head, "task": task,
                            "selectivity": rng.normal()} for task in ("in_loop", "has_loop") for layer, head in heads])
    folder = study / "probe" / "tasks"
    folder.mkdir(parents=True)
    probes.to_csv(folder / "probes.csv", index=False)
    ProbeRecord(command="probe", tasks=["in_loop", "has_loop"]).write(folder)
    attention = pd.DataFrame([{"condition": f"L{layer}H{head}", "layer": layer, "head": head,
                               "entropy": rng.uniform(), "q2c_mass": rng.uniform()} for layer, head in heads])
    folder = study / "attention" / "pair"
    folder.mkdir(parents=True)
    attention.to_csv(folder / "heads.csv", index=False)
    AttentionRecord(command="attention", model="m", model_revision="", corpus_hash="", task_fingerprint="",
                    input="pair", n_examples=10, statistics=["entropy", "q2c_mass"]).write(folder)


def test_paired_comparison_equals_scipy_on_the_per_query_files(studies, capsys):
    runs, a, b = studies["runs"], studies["A"], studies["B"]
    add_probes_and_attention(a, 0)
    add_probes_and_attention(b, 1)
    out = compare(runs, a, b, extra=("wandb.mode=offline", "compare.alpha=0.5"))
    printed = capsys.readouterr().out
    assert "paired: the same 10 queries and candidates" in printed
    record = json.loads((out / "run.json").read_text())
    assert record["command"] == "compare" and record["paired"] is True and (record["layers"], record["heads"]) == (2, 4)
    table_a, wide_a = ablation_files(a)
    table_b, wide_b = ablation_files(b)

    # The baselines: a paired t-test of the per-query reciprocal ranks.
    (baseline,) = pd.read_csv(out / "baseline_test.csv").to_dict("records")
    t_test = stats.ttest_rel(wide_b["baseline"], wide_a["baseline"])
    assert (baseline["t_stat"], baseline["p_value"]) == pytest.approx((t_test.statistic, t_test.pvalue))
    assert (baseline["mrr_a"], baseline["mrr_b"]) == pytest.approx((wide_a["baseline"].mean(),
                                                                     wide_b["baseline"].mean()))
    assert baseline["ci_low"] <= baseline["difference"] <= baseline["ci_high"]

    # Each head: d_i = (rr_B,h - rr_B,base) - (rr_A,h - rr_A,base), its mean, bootstrap CI, t-test, Holm.
    heads = pd.read_csv(out / "heads.csv", dtype={"change": str})
    heads["change"] = heads["change"].fillna("")
    assert heads["condition"].tolist() == [f"L{layer}H{head}" for layer in range(2) for head in range(4)]
    tested = 0
    for _, row in heads.iterrows():
        h = row["condition"]
        d = ((wide_b[h] - wide_b["baseline"]) - (wide_a[h] - wide_a["baseline"])).to_numpy()
        delta_a = table_a.set_index("condition").loc[h, "delta_mrr"]
        delta_b = table_b.set_index("condition").loc[h, "delta_mrr"]
        assert (row["delta_mrr_a"], row["delta_mrr_b"]) == (delta_a, delta_b)
        assert row["difference"] == pytest.approx(delta_b - delta_a)
        assert row["difference"] == pytest.approx(d.mean(), abs=1e-12)
        if np.ptp(d) > 1e-12:   # below: float noise, which compare_paired reads as no spread
            tested += 1
            t_test = stats.ttest_1samp(d, 0.0)
            assert (row["t_stat"], row["p_value"]) == pytest.approx((t_test.statistic, t_test.pvalue))
            boot = stats.bootstrap((d,), np.mean, n_resamples=200, method="percentile", vectorized=True,
                                   rng=condition_rng(0, h))
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((boot.confidence_interval.low,
                                                                      boot.confidence_interval.high))
            assert row["cohens_d"] == pytest.approx(d.mean() / d.std(ddof=1))
        assert row["n_queries"] == 10
    assert tested >= 4
    np.testing.assert_allclose(heads["p_adjusted"], multipletests(heads["p_value"], method="holm")[1])
    expected = np.where(heads["p_adjusted"] < 0.5, np.where(heads["difference"] < 0, "gained", "lost"), "")
    assert heads["change"].tolist() == expected.tolist()
    assert record["gained"] == heads.loc[heads["change"] == "gained", "condition"].tolist()

    # The two maps: rank correlations with their permutation p-values, and the overlaps.
    correlations = pd.read_csv(out / "correlations.csv")
    row = correlations[correlations["evidence"] == "delta_mrr"].iloc[0]
    x, y = table_a["delta_mrr"].to_numpy(), table_b["delta_mrr"].to_numpy()
    assert (row["spearman_rho"], row["spearman_p"]) == pytest.approx(tuple(stats.spearmanr(x, y)))
    assert (row["kendall_tau"], row["kendall_p"]) == pytest.approx(tuple(stats.kendalltau(x, y)))
    for name, function in (("spearman", stats.spearmanr), ("kendall", stats.kendalltau)):
        perm = stats.permutation_test((x, y), lambda u, v, f=function: f(u, v).statistic, vectorized=False,
                                      permutation_type="pairings", n_resamples=200,
                                      rng=condition_rng(0, f"{name}:delta_mrr"))
        assert row[f"{name}_p_perm"] == pytest.approx(perm.pvalue)
    overlap = pd.read_csv(out / "overlap.csv").set_index("heads")
    top = overlap.loc["top_8"]    # top_k=10 capped at the 8 heads there are: every head, J = 1
    assert (top["n_a"], top["n_both"], top["jaccard"], top["chance_jaccard"]) == (8, 8, 1.0, 1.0)
    significant = overlap.loc["significant"]
    set_a = set(table_a.loc[table_a["significant"], "condition"])
    set_b = set(table_b.loc[table_b["significant"], "condition"])
    assert (significant["n_a"], significant["n_b"], significant["n_both"]) == (len(set_a), len(set_b),
                                                                             len(set_a & set_b))

    # Probes and attention side by side: B - A per head, Spearman per task and statistic.
    probes = pd.read_csv(out / "probes.csv")
    assert sorted(probes["task"].unique()) == ["has_loop", "in_loop"]
    np.testing.assert_allclose(probes["difference"], probes["selectivity_b"] - probes["selectivity_a"])
    attention = pd.read_csv(out / "attention.csv")
    assert set(attention["statistic"]) == {"entropy", "q2c_mass"} and set(attention["input"]) == {"pair"}
    for key, frame, column in (("selectivity:in_loop", probes[probes["task"] == "in_loop"], "selectivity"),
                               ("attention:pair:entropy", attention[attention["statistic"] == "entropy"], "value")):
        row = correlations[correlations["evidence"] == key].iloc[0]
        rho = stats.spearmanr(frame[f"{column}_a"], frame[f"{column}_b"])
        assert (row["spearman_rho"], row["spearman_p"]) == pytest.approx((rho.statistic, rho.pvalue))
        assert np.isnan(row["spearman_p_perm"])

    for name in ("heads.md", "heads.tex", "summary.md", "heatmap_a.png", "heatmap_b.svg", "heatmap_difference.png",
                 "difference_selectivity_in_loop.png", "difference_attention_pair_entropy.png", "studies.csv"):
        assert (out / name).is_file(), name
    assert "Holm-corrected over the heads" in (out / "heads.md").read_text()
    assert "\\toprule" in (out / "heads.tex").read_text()
    assert list((runs / "wandb").glob("offline-run-*"))


def test_studies_on_different_data_are_compared_by_their_maps_only(studies, capsys):
    runs, a, c = studies["runs"], studies["A"], studies["C"]
    out = compare(runs, a, c, extra=("compare.top_k=3",))
    printed = capsys.readouterr().out
    assert "no per-query paired test is possible" in printed and "different queries or candidates" in printed
    record = json.loads((out / "run.json").read_text())
    assert record["paired"] is False and "no per-query paired test is possible" in record["pairing"]
    assert record["baseline_test"] == {} and not (out / "baseline_test.csv").exists()
    heads = pd.read_csv(out / "heads.csv")
    assert "t_stat" not in heads and {"delta_mrr_a", "delta_mrr_b", "difference", "rank_a", "rank_b"} <= set(heads)
    table_a, _ = ablation_files(a)
    table_c, _ = ablation_files(c)
    x, y = table_a["delta_mrr"].to_numpy(), table_c["delta_mrr"].to_numpy()
    row = pd.read_csv(out / "correlations.csv").iloc[0]
    assert row["evidence"] == "delta_mrr"
    assert row["spearman_rho"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert row["kendall_tau"] == pytest.approx(stats.kendalltau(x, y).statistic)
    assert 0 < row["spearman_p_perm"] <= 1 and 0 < row["kendall_p_perm"] <= 1
    # The top 3 of each (most negative ΔMRR, ties in head order), Jaccard, and its chance level counted exactly.
    top = pd.read_csv(out / "overlap.csv").set_index("heads").loc["top_3"]
    top_a = set(table_a.sort_values(["delta_mrr", "layer", "head"], kind="stable")["condition"][:3])
    top_c = set(table_c.sort_values(["delta_mrr", "layer", "head"], kind="stable")["condition"][:3])
    assert top["jaccard"] == pytest.approx(len(top_a & top_c) / len(top_a | top_c))
    chance = sum(math.comb(3, k) * math.comb(5, 3 - k) / math.comb(8, 3) * k / (6 - k) for k in range(4))
    assert top["chance_jaccard"] == pytest.approx(chance)
    assert "No per-query paired test is possible" in (out / "heads.md").read_text()
    assert (out / "heatmap_difference.png").is_file()


def test_three_studies_give_the_matrix_of_pairwise_correlations(studies):
    runs = studies["runs"]
    trio = [studies["A"], studies["B"], studies["C"]]
    out = compare(runs, *trio)
    matrix = pd.read_csv(out / "correlation_matrix.csv", index_col="study")
    names = [study.name for study in trio]
    assert matrix.index.tolist() == names == matrix.columns.tolist()
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    maps = {study.name: ablation_files(study)[0]["delta_mrr"].to_numpy() for study in trio}
    for first, second in combinations(names, 2):
        rho = stats.spearmanr(maps[first], maps[second]).statistic
        assert matrix.loc[first, second] == pytest.approx(rho) == pytest.approx(matrix.loc[second, first])
    record = json.loads((out / "run.json").read_text())
    assert [pair["paired"] for pair in record["pairs"]] == [True, False, False]
    assert record["paired"] is False and not (out / "heads.csv").exists()
    assert (out / "correlation_matrix.png").is_file() and len(pd.read_csv(out / "maps.csv")) == 24


def test_refusals_name_the_grids_and_the_folder(studies, tmp_path, capsys):
    runs, a, d = studies["runs"], studies["A"], studies["D"]
    assert main(["compare", a.name, d.name, f"runs_dir={runs}"]) == 2
    error = capsys.readouterr().err
    assert "head grids differ" in error and "2 layers × 4 heads" in error and "3 layers × 4 heads" in error
    empty = tmp_path / "no-ablation-here"
    empty.mkdir()
    assert main(["compare", str(a), str(empty), f"runs_dir={runs}"]) == 2
    error = capsys.readouterr().err
    assert str(empty) in error and "codebert-heads ablate" in error
    assert main(["compare", str(a), f"runs_dir={runs}"]) == 2
    assert "two or more studies" in capsys.readouterr().err
    assert not (runs / "compare" / f"{a.name}--{d.name}").exists()
