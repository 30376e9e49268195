"""Activation patching: a hand-built model whose answer is known (one head carries everything), the patched scores
against transformers run with its own hooks, and every number of the table recomputed from the exported scores."""
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CODES, QUERIES
from scipy import stats
from statsmodels.stats.multitest import multipletests
from tiny_models import make_tiny_cross_encoder

from codesearch.records import Example, RetrievalTask
from experiments.cli import main
from heads.models import load_encoder
from heads.settings import ModelConfig
from patching.engine import patch_scores
from patching.inputs import patch_inputs

MODEL = ModelConfig(max_pair_length=40, batch_size=5)


def task_of(n=8):
    examples = [Example(f"q{i}", q, c, "python") for i, (q, c) in enumerate(zip(QUERIES[:n], CODES[:n]))]
    return RetrievalTask("test", "pairs", examples, [f"c{j}" for j in range(n)], list(CODES[:n]), list(range(n)))


def only_head(folder, layer, head):
    """The model with every other head's output projection columns zeroed."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(folder)
    width = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        dense = model.bert.encoder.layer[layer].attention.output.dense
        keep = dense.weight[:, head * width:(head + 1) * width].clone()
        dense.weight.zero_()
        dense.weight[:, head * width:(head + 1) * width] = keep
    model.save_pretrained(folder)


def test_one_head_carrying_everything_restores_and_destroys_all_of_the_gap(tmp_path):
    # One layer, BERT's classifier reads only [CLS], whose embedding is the same in both runs: the code reaches the
    # score only through attention, here only through head 2. Patching it moves [CLS] exactly to the other run's.
    folder = make_tiny_cross_encoder(tmp_path / "one", layers=1, attention_gain=300.0)
    only_head(folder, 0, 2)
    encoder = load_encoder(str(folder))
    inputs = patch_inputs(encoder, task_of(), 0, 0, MODEL)
    scores = patch_scores(encoder, inputs, progress=False)
    gap = scores.clean - scores.corrupt
    assert gap.abs().max() > 0.05
    torch.testing.assert_close(scores.denoised["L0H2"], scores.clean, atol=1e-5, rtol=0)
    torch.testing.assert_close(scores.noised["L0H2"], scores.corrupt, atol=1e-5, rtol=0)
    restored = (scores.denoised["L0H2"] - scores.corrupt).double().sum() / gap.double().sum()
    assert restored == pytest.approx(1.0, abs=1e-3)
    for other in ("L0H0", "L0H1", "L0H3"):
        assert torch.equal(scores.denoised[other], scores.corrupt) and torch.equal(scores.noised[other], scores.clean)


def own_hook_patch(folder, clean_batch, corrupt_batch, layer, head):
    """(denoised, noised) scores by transformers alone: the head's slice of the output projection's input taken from
    the other run's forward."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    dense = model.bert.encoder.layer[layer].attention.output.dense
    width = model.config.hidden_size // model.config.num_attention_heads
    cut = slice(head * width, (head + 1) * width)

    def run(batch, replace=None):
        seen = {}

        def hook(_module, args):
            seen["z"] = args[0].clone()
            if replace is not None:
                z = args[0].clone()
                z[:, :, cut] = replace[:, :, cut]
                return (z,)
        handle = dense.register_forward_pre_hook(hook)
        with torch.no_grad():
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                           token_type_ids=batch.token_type_ids).logits[:, 1]
        handle.remove()
        return logits, seen["z"]
    _, clean_z = run(clean_batch)
    _, corrupt_z = run(corrupt_batch)
    return run(corrupt_batch, clean_z)[0], run(clean_batch, corrupt_z)[0]


def test_patched_scores_equal_transformers_with_its_own_hooks(tmp_path):
    folder = make_tiny_cross_encoder(tmp_path / "two", attention_gain=30.0)
    encoder = load_encoder(str(folder))
    inputs = patch_inputs(encoder, task_of(10), 0, 3, MODEL)
    assert (inputs.corrupt_code != inputs.clean_code).all()
    for clean, corrupt in zip(inputs.clean.batches, inputs.corrupt.batches):   # aligned token for token
        assert clean.positions == corrupt.positions and torch.equal(clean.attention_mask, corrupt.attention_mask)
        assert torch.equal(clean.segments, corrupt.segments)
    scores = patch_scores(encoder, inputs, progress=False)
    for layer, head in ((0, 1), (1, 3)):
        for clean, corrupt in zip(inputs.clean.batches, inputs.corrupt.batches):
            denoised, noised = own_hook_patch(folder, clean, corrupt, layer, head)
            rows = torch.as_tensor(clean.positions)
            torch.testing.assert_close(scores.denoised[f"L{layer}H{head}"][rows], denoised, atol=1e-5, rtol=0)
            torch.testing.assert_close(scores.noised[f"L{layer}H{head}"][rows], noised, atol=1e-5, rtol=0)


def test_patch_command_numbers_recomputed_from_its_files(tmp_path, pairs_file):
    folder = make_tiny_cross_encoder(tmp_path / "model", attention_gain=30.0)
    common = [f"data.path={pairs_file}", f"model.name={folder}", "model.max_pair_length=40", "model.batch_size=5",
              "progress=false", f"runs_dir={tmp_path / 'runs'}", "eval.protocol=csn", "eval.csn_batch_size=4"]
    assert main(["ablate", *common, "ablation.n_bootstrap=200",
                 "ablation.n_permutations=200"]) == 0
    out = tmp_path / "patch"
    assert main(["patch", *common, f"output_dir={out}", "patch.n_bootstrap=300", "patch.n_permutations=300"]) == 0
    table = pd.read_csv(out / "patching.csv")
    examples = pd.read_csv(out / "examples.csv")
    per_example = pd.read_csv(out / "per_example.csv")
    clean, corrupt = examples["clean_score"].to_numpy(), examples["corrupt_score"].to_numpy()
    for what, column, patched_vs in (("restored", "denoised", corrupt), ("destroyed", "noised", clean)):
        p_values = []
        for _, row in table.iterrows():
            patched = per_example.loc[per_example["condition"] == row["condition"], column].to_numpy()
            moved = patched - corrupt if what == "restored" else clean - patched
            assert row[what] == pytest.approx(moved.mean() / (clean - corrupt).mean(), rel=1e-9)
            p = stats.ttest_rel(patched, patched_vs).pvalue if np.ptp(moved) > 0 else 1.0
            assert row[f"{what}_p_value"] == pytest.approx(p, rel=1e-9)
            assert row[f"{what}_ci_low"] <= row[what] <= row[f"{what}_ci_high"] or np.ptp(moved) == 0
            p_values.append(p)
        reject, adjusted, _, _ = multipletests(p_values, alpha=0.05, method="holm")
        assert np.allclose(table[f"{what}_p_adjusted"], adjusted) and (table[f"{what}_significant"] == reject).all()
    correlation = pd.read_csv(out / "ablation_correlation.csv")
    importance = pd.read_csv(next((tmp_path / "runs").rglob("importance.csv")))
    joined = table.merge(importance, on="condition")
    assert correlation.loc[0, "spearman_rho"] == pytest.approx(
        stats.spearmanr(joined["restored"], -joined["delta_mrr"]).statistic, abs=1e-9)
    assert (out / "heatmap_restored.png").is_file() and (out / "heatmap_destroyed.png").is_file()


def test_patching_a_bi_encoder_is_refused(tmp_path, pairs_file, tiny_bert_dir, capsys):
    assert main(["patch", f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"output_dir={tmp_path / 'x'}",
                 "progress=false"]) == 2
    assert "is a bi-encoder" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_the_report_shows_a_cross_encoder_study_with_its_patching(tmp_path, pairs_file):
    folder = make_tiny_cross_encoder(tmp_path / "model", attention_gain=30.0)
    runs = tmp_path / "runs"
    common = [f"data.path={pairs_file}", f"model.name={folder}", "model.max_pair_length=40", "model.batch_size=5",
              "progress=false", f"runs_dir={runs}", "eval.protocol=csn", "eval.csn_batch_size=4",
              "wandb.mode=disabled"]
    assert main(["evaluate", *common]) == 0
    assert main(["patch", *common, "patch.n_bootstrap=200", "patch.n_permutations=200"]) == 0
    (study,) = runs.iterdir()
    assert main(["report", str(study), "wandb.mode=disabled"]) == 0
    text = (study / "report" / "index.html").read_text()
    assert 'id="patching"' in text and "Restored: the share of the clean−corrupt gap" in text
    assert 'id="missing-patch"' not in text and 'id="missing-ablate"' in text
