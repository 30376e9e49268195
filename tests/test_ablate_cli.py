"""`codebert-heads ablate` end to end: the exported table, numbers recomputed independently, resume, bad input."""
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from statsmodels.stats.multitest import multipletests

import ablation.engine as engine
import ablation.study as study
from experiments.cli import main

COLUMNS = ["condition", "layer", "head", "mode", "side", "baseline_mrr", "ablated_mrr", "delta_mrr", "ci_low",
           "ci_high", "t_stat", "p_value", "p_perm", "p_adjusted", "cohens_d", "significant", "grad_score",
           "n_queries"]
FAST = ["ablation.n_bootstrap=500", "ablation.n_permutations=500", "progress=false", "model.batch_size=5"]


def ablate(*args) -> int:
    return main(["ablate", *map(str, args), *FAST])


def test_single_head_map_outputs_and_numbers(tmp_path, pairs_file, tiny_bert_dir):
    out = tmp_path / "run"
    assert ablate(f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"output_dir={out}") == 0
    table = pd.read_csv(out / "importance.csv")
    assert list(table.columns) == COLUMNS
    assert table["condition"].tolist() == [f"L{layer}H{head}" for layer in range(2) for head in range(4)]
    assert (table["mode"] == "zero").all() and (table["side"] == "both").all()
    per_query = pd.read_csv(out / "per_query.csv")
    assert list(per_query.columns) == ["query_id", "condition", "rr"]
    wide = per_query.pivot(index="query_id", columns="condition", values="rr")
    assert len(wide) == 12 and set(wide.columns) == {"baseline", *table["condition"]}
    # Every number of the table, recomputed from per_query.csv with scipy and statsmodels.
    for _, row in table.iterrows():
        baseline, ablated = wide["baseline"].to_numpy(), wide[row["condition"]].to_numpy()
        d = ablated - baseline
        assert row["baseline_mrr"] == pytest.approx(baseline.mean())
        assert row["ablated_mrr"] == pytest.approx(ablated.mean())
        assert row["delta_mrr"] == pytest.approx(d.mean())
        assert row["ci_low"] <= row["delta_mrr"] <= row["ci_high"]
        if np.any(d != d[0]):
            t_test = stats.ttest_rel(ablated, baseline)
            assert (row["t_stat"], row["p_value"]) == pytest.approx((t_test.statistic, t_test.pvalue))
            assert row["cohens_d"] == pytest.approx(d.mean() / d.std(ddof=1))
        assert row["n_queries"] == 12
    np.testing.assert_allclose(table["p_adjusted"], multipletests(table["p_value"], method="holm")[1])
    assert (table["significant"] == (table["p_adjusted"] < 0.05)).all()
    assert table["grad_score"].notna().all()
    assert (table["delta_mrr"] != 0).any()
    # The paper versions, the heatmap, and the run record.
    markdown = (out / "importance.md").read_text()
    assert "| Head" in markdown and "L1H3" in markdown and "Holm-corrected" in markdown
    latex = (out / "importance.tex").read_text()
    assert "\\toprule" in latex and "\\midrule" in latex and "\\bottomrule" in latex
    assert (out / "heatmap.png").stat().st_size > 1000 and "<svg" in (out / "heatmap.svg").read_text()
    run = json.loads((out / "run.json").read_text())
    for key in ("config", "versions", "corpus_hash", "timings", "baseline_mrr", "gradient_vs_exact", "protocol"):
        assert key in run
    assert run["baseline_mrr"] == pytest.approx(wide["baseline"].mean())
    (agreement,) = run["gradient_vs_exact"]
    assert (agreement["mode"], agreement["side"], agreement["n_heads"]) == ("zero", "both", 8)


def test_ablated_ranks_equal_the_model_with_the_head_removed_from_its_weights(tmp_path, pairs_file, tiny_bert_dir):
    """Independent of the hooks: zero the head's columns of W_O, save the model, evaluate it plainly."""
    from transformers import AutoModel, AutoTokenizer

    out = tmp_path / "run"
    assert ablate(f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"output_dir={out}",
                  "ablation.heads=1.2", "ablation.gradient=false") == 0
    model = AutoModel.from_pretrained(tiny_bert_dir)
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        model.encoder.layer[1].attention.output.dense.weight[:, 2 * head_dim:3 * head_dim] = 0
    edited = tmp_path / "edited"
    model.save_pretrained(edited)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(edited)
    assert main(["evaluate", f"data.path={pairs_file}", f"model.name={edited}", f"output_dir={tmp_path / 'ev'}",
                 "model.batch_size=5", "progress=false"]) == 0
    plain = pd.read_csv(tmp_path / "ev" / "per_query.csv").set_index("query_id")["rr"]
    ablated = pd.read_csv(out / "per_query.csv").query("condition == 'L1H2'").set_index("query_id")["rr"]
    np.testing.assert_allclose(ablated.loc[plain.index].to_numpy(), plain.to_numpy(), rtol=0, atol=1e-12)


def test_resume_continues_and_ends_with_the_same_table(tmp_path, pairs_file, tiny_roberta_dir, monkeypatch):
    common = [f"data.path={pairs_file}", f"model.name={tiny_roberta_dir}"]
    assert ablate(*common, f"output_dir={tmp_path / 'whole'}") == 0

    done = []
    real_run = engine.run_conditions

    def interrupted_run(*args, **kwargs):
        on_result = args[4]

        def stop_after_three(condition, q, c):
            on_result(condition, q, c)
            done.append(condition.name)
            if len(done) == 3:
                raise KeyboardInterrupt
        return real_run(*args[:4], stop_after_three, *args[5:], **kwargs)

    monkeypatch.setattr(study, "run_conditions", interrupted_run)
    out = tmp_path / "resumed"
    assert ablate(*common, f"output_dir={out}") == 130
    assert not (out / "run.json").exists() and not (out / "importance.csv").exists()

    rerun = []

    def counting_run(encoder, queries, candidates, conditions, *args, **kwargs):
        rerun.extend(c.name for c in conditions)
        return real_run(encoder, queries, candidates, conditions, *args, **kwargs)

    monkeypatch.setattr(study, "run_conditions", counting_run)
    assert ablate(*common, f"output_dir={out}", "resume=true") == 0
    assert sorted(rerun) == sorted(set(f"L{layer}H{head}" for layer in range(2) for head in range(4)) - set(done))
    for name in ("importance.csv", "per_query.csv", "importance.md", "grad_scores.csv"):
        assert (out / name).read_text() == (tmp_path / "whole" / name).read_text(), name


def test_resume_refuses_a_folder_of_other_settings(tmp_path, pairs_file, tiny_bert_dir, capsys):
    common = [f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"output_dir={tmp_path / 'r'}",
              "ablation.heads=0.0", "ablation.gradient=false"]
    assert ablate(*common) == 0
    assert ablate(*common, "resume=true", "ablation.mode=resample") == 2
    assert "holds a study with other settings (differing: mode)" in capsys.readouterr().err


def test_head_sets_modes_sides_and_top_k(tmp_path, csn_dir, tiny_bert_dir):
    common = [f"data.path={csn_dir}", f"model.name={tiny_bert_dir}"]
    assert ablate(*common, f"output_dir={tmp_path / 'set'}", "ablation.heads=*.0", "ablation.per_head=false",
                  "ablation.mode=mean", "ablation.side=code") == 0
    table = pd.read_csv(tmp_path / "set" / "importance.csv")
    assert table["condition"].tolist() == ["L*H0"] and pd.isna(table.loc[0, "layer"])
    assert (table.loc[0, "mode"], table.loc[0, "side"]) == ("mean", "code")
    assert ablate(*common, f"output_dir={tmp_path / 'top'}", "ablation.top_k=3", "ablation.mode=resample") == 0
    top = pd.read_csv(tmp_path / "top" / "importance.csv")
    grads = pd.read_csv(tmp_path / "top" / "grad_scores.csv")
    expected = grads.assign(size=grads["grad_score"].abs()).nlargest(3, "size")["condition"]
    assert sorted(top["condition"]) == sorted(expected)


@pytest.mark.parametrize("override, message", [
    ("ablation.heads=", "ablation.heads is empty"),
    ("ablation.heads=1", "malformed head spec part '1'"),
    ("ablation.heads=2.0", "layer 2 is out of range"),
    ("ablation.heads=0.4", "head 4 is out of range"),
    ("ablation.mode=blur", "expected one of \\[zero, mean, resample\\]"),
    ("ablation.side=left", "expected one of \\[query, code, both\\]"),
    ("ablation.mode=mean", "ablation.mean_split=valid .*"),
    ("ablation.max_memory_gb=0.001", "ablation.max_memory_gb=0.001 cannot hold the ablation: it needs at least"),
    ("ablation.max_memory_gb=0", "ablation.max_memory_gb=0.0: must be positive"),
    ("ablation.shard=0/2", "ablation.shard='0/2': give i/n with 1 <= i <= n"),
    ("ablation.shard=three", "ablation.shard='three': give i/n"),
    ("ablation.heads=0.1,1.2 ablation.shard=3/3", "only 2 conditions, so shard 3 of 3 would be empty"),
    ("ablation.precision=tf32", "ablation.precision=tf32 is a CUDA mode"),
    ("ablation.precision=fp16", "expected one of \\[fp32, tf32, bf16\\]"),
])
def test_bad_input_fails_before_any_long_work(tmp_path, pairs_file, tiny_bert_dir, monkeypatch, capsys,
                                              override, message):
    def must_not_run(*_args, **_kwargs):
        raise AssertionError("long work started")

    monkeypatch.setattr(study, "task_embeddings", must_not_run)
    code = ablate(f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"output_dir={tmp_path / 'x'}",
                  *override.split())
    assert code == 2
    assert re.search(message, capsys.readouterr().err)


def test_mean_mode_needs_a_held_out_split_with_tokens(tmp_path, csn_dir, tiny_bert_dir, capsys):
    common = [f"data.path={csn_dir}", f"model.name={tiny_bert_dir}", f"output_dir={tmp_path / 'x'}",
              "ablation.mode=mean"]
    assert ablate(*common, "ablation.mean_split=test") == 2
    assert "is the evaluated split" in capsys.readouterr().err
    assert ablate(*common, "ablation.mean_split=train") == 2
    assert "no CodeSearchNet files for python/train" in capsys.readouterr().err
