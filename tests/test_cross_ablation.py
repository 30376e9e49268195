"""Head ablation in a cross-encoder: the engine's masked scores against the model run by transformers alone with its own
hook (the head's slice of the output projection's input zeroed at the query's, the code's or every token), the
exported ΔMRR recomputed from those scores in CodeBERT's protocol, resume, and the errors."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CODES, QUERIES
from tiny_models import make_tiny_cross_encoder

from ablation.conditions import build_conditions
from ablation.engine import Layout, run_pair_conditions
from experiments.cli import main
from heads.models import load_encoder
from heads.pairs import pair_inputs

FAST = ["ablation.n_bootstrap=200", "ablation.n_permutations=200", "progress=false", "model.batch_size=5",
        "model.max_pair_length=40"]
SEQUENCE = {"query": 0, "code": 1}


def own_hook_scores(folder, queries, codes, pairs, max_length, layer=None, head=None, side="both"):
    """Each pair's positive logit from transformers alone; with a head, its slice of the input of layer `layer`'s
    attention output projection zeroed at the side's tokens (the tokenizer's own sequence ids say which)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    width = model.config.hidden_size // model.config.num_attention_heads
    scores = []
    for q, c in pairs:
        encoded = tokenizer(queries[q], codes[c], truncation="only_second", max_length=max_length,
                            return_tensors="pt")
        where = torch.tensor([side == "both" or s == SEQUENCE[side] for s in encoded.sequence_ids(0)])
        handle = None
        if layer is not None:
            backbone = getattr(model, model.config.model_type)

            def zero_head(_module, args):
                z = args[0].clone()
                z[0, where, head * width:(head + 1) * width] = 0
                return (z,)
            handle = backbone.encoder.layer[layer].attention.output.dense.register_forward_pre_hook(zero_head)
        with torch.no_grad():
            scores.append(model(**encoded).logits[0, -1].item())
        if handle is not None:
            handle.remove()
    return np.array(scores)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_masked_scores_equal_the_models_own_hook_in_every_layout(tmp_path, family):
    folder = make_tiny_cross_encoder(tmp_path / family, family=family, attention_gain=30.0)
    encoder = load_encoder(str(folder))
    queries, codes = QUERIES[:4], CODES[:4]
    pairs = np.array([(q, c) for q in range(4) for c in range(4)])
    inputs = pair_inputs(encoder, queries, codes, pairs, max_length=40, max_query_length=32, batch_size=5)
    unmasked, change = own_hook_scores(folder, queries, codes, pairs, 40), {}
    for side in ("both", "query", "code"):
        conditions = build_conditions("*", True, encoder.n_layers, encoder.n_heads, "zero", side)
        got = {}
        run_pair_conditions(encoder, inputs, conditions, lambda c, s: got.__setitem__(c.name, s.cpu().numpy().copy()),
                            progress=False)
        chunked = {}
        run_pair_conditions(encoder, inputs, conditions,
                            lambda c, s: chunked.__setitem__(c.name, s.cpu().numpy().copy()),
                            layout=Layout({"pair": 1}, group_size=3), progress=False)
        for condition in conditions:
            head = condition.single_head
            expected = own_hook_scores(folder, queries, codes, pairs, 40, head.layer, head.index, side)
            np.testing.assert_allclose(got[condition.name], expected, atol=1e-5,
                                       err_msg=f"{condition.name} {side}")
            assert np.array_equal(chunked[condition.name], got[condition.name])   # bit-identical when chunked
        change[side] = max(np.abs(scores - unmasked).max() for scores in got.values())
    assert min(change.values()) > 1e-3   # the masks change something on every side, well above the tolerance


def csn_mrr(scores, n_queries, batch_size):
    """CodeBERT's mrr: each query's gold (the diagonal) ranked among its batch's codes, ties against the model."""
    rr = []
    for start in range(0, n_queries - n_queries % batch_size, batch_size):
        for i in range(batch_size):
            row = scores[(start + i) * batch_size:(start + i + 1) * batch_size]
            rr.append(1 / np.sum(row >= row[i]))
    return np.array(rr)


def batch_pairs(n_queries, batch_size):
    return [(start + i, start + j) for start in range(0, n_queries - n_queries % batch_size, batch_size)
            for i in range(batch_size) for j in range(batch_size)]


def test_ablate_a_cross_encoder_exports_the_delta_mrr_of_its_own_hook(tmp_path, pairs_file, tiny_cross_dir):
    out = tmp_path / "run"
    args = ["ablate", f"data.path={pairs_file}", f"model.name={tiny_cross_dir}", f"output_dir={out}",
            "eval.protocol=csn", "eval.csn_batch_size=4", "ablation.side=code", *FAST]
    assert main(args) == 0
    table = pd.read_csv(out / "importance.csv")
    record = json.loads((out / "run.json").read_text())
    assert record["data"]["kind"] == "cross_encoder" and record["data"]["n_pairs"] == 48
    assert len(table) == 8 and table["grad_score"].isna().all()
    pairs = batch_pairs(12, 4)
    baseline = csn_mrr(own_hook_scores(tiny_cross_dir, QUERIES, CODES, pairs, 40), 12, 4)
    assert record["baseline_mrr"] == pytest.approx(baseline.mean())
    per_query = pd.read_csv(out / "per_query.csv").pivot(index="query_id", columns="condition", values="rr")
    for _, row in table.iterrows():
        scores = own_hook_scores(tiny_cross_dir, QUERIES, CODES, pairs, 40, row["layer"], row["head"], "code")
        rr = csn_mrr(scores, 12, 4)
        assert row["delta_mrr"] == pytest.approx(rr.mean() - baseline.mean(), abs=1e-12), row["condition"]
        assert np.allclose(per_query.loc[[f"q{i}" for i in range(12)], row["condition"]].to_numpy(), rr)
    # A rerun resumes from the saved conditions and gives the same table.
    assert main([*args, "resume=true"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "importance.csv"), table)


def test_mean_mode_and_rerank_run(tmp_path, pairs_file, tiny_cross_dir, tiny_bert_dir, csn_dir):
    out = tmp_path / "mean"
    assert main(["ablate", f"data.path={csn_dir}", f"model.name={tiny_cross_dir}",
                 f"output_dir={out}", "eval.protocol=csn", "eval.csn_batch_size=4", "ablation.mode=mean",
                 "ablation.heads=0.*", *FAST]) == 0
    table = pd.read_csv(out / "importance.csv")
    assert len(table) == 4 and (table["mode"] == "mean").all() and table["ablated_mrr"].notna().all()
    out = tmp_path / "rerank"
    assert main(["ablate", f"data.path={pairs_file}", f"model.name={tiny_cross_dir}", f"output_dir={out}",
                 "eval.protocol=rerank", f"eval.retriever={tiny_bert_dir}", "eval.rerank_k=3",
                 "ablation.heads=1.*", *FAST]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["protocol"]["protocol"] == "rerank" and record["data"]["n_pairs"] == 36


def test_cross_encoder_ablation_errors(tmp_path, pairs_file, tiny_cross_dir, capsys):
    def error(command, *overrides):
        assert main([command, f"data.path={pairs_file}", f"model.name={tiny_cross_dir}",
                     f"output_dir={tmp_path / 'x'}", "eval.protocol=csn", "eval.csn_batch_size=4", *FAST,
                     *overrides]) == 2
        return capsys.readouterr().err

    assert "is a cross-encoder" in error("ablate", "ablation.gradient=true")
    assert "ablation.top_k" in error("ablate", "ablation.top_k=2")
    assert "eval.protocol=whole_pool" in error("ablate", "eval.protocol=whole_pool")
    assert "prune runs on a bi-encoder" in error("prune")
    assert not (tmp_path / "x").exists()


def test_bi_and_cross_encoder_maps_compare_query_by_query(tmp_path, pairs_file, tiny_cross_dir, tiny_bert_dir):
    """The bi-encoder and the cross-encoder of one base, both in CodeBERT's batches of the same queries: `compare`
    pairs them query by query; `attention` and `probe` take the cross-encoder's pair input as they are."""
    runs = tmp_path / "runs"
    common = [f"data.path={pairs_file}", f"runs_dir={runs}", "eval.protocol=csn", "eval.csn_batch_size=4", *FAST]
    for model in (tiny_bert_dir, tiny_cross_dir):
        assert main(["ablate", f"model.name={model}", *common]) == 0
    kinds = {json.loads((p.parent / "run.json").read_text())["data"].get("kind", "bi_encoder"): p.parents[2].name
             for p in runs.rglob("importance.csv")}
    studies = [kinds["bi_encoder"], kinds["cross_encoder"]]
    assert main(["compare", *studies, f"runs_dir={runs}", "progress=false", "compare.n_bootstrap=200",
                 "compare.n_permutations=200"]) == 0
    (folder,) = (runs / "compare").iterdir()
    record = json.loads((folder / "run.json").read_text())
    assert record["paired"] is True
    cross_study = runs / kinds["cross_encoder"]
    assert main(["attention", f"model.name={tiny_cross_dir}", *common, "attention.examples=8"]) == 0
    heads = pd.read_csv(next((cross_study / "attention").rglob("heads.csv")))
    assert heads["q2c_mass"].notna().all() and "delta_mrr" in heads.columns
