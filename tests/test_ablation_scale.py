"""The ablation at the benchmark's size: the pool in chunks and the conditions in groups give the unchunked path's
embeddings and ranks bit for bit; the memory plan keeps to its budget and refuses one it cannot; the score blocks and
the gradient's loss in blocks; reduced precision reported against fp32; shards aggregated into one run's table."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from ablation.conditions import Condition, build_conditions, shard
from ablation.engine import WHOLE, Layout, run_conditions, side_inputs
from ablation.gradient import loss_gradients, retrieval_loss
from ablation.means import head_means
from ablation.plan import Budget, cache_bytes, plan_memory
from codesearch.errors import UserError
from codesearch.metrics import evaluate_protocol
from experiments.cli import main
from heads.models import load_encoder, set_precision
from heads.naming import HeadId

WORDS = "read parse sort merge count split join write open close find load save print reverse".split()
QUERIES = [f"{WORDS[i % 15]} the {WORDS[(3 * i) % 15]} lines" + " again" * (i % 4) for i in range(17)]
CODES = [f"def f{i}(x):\n    return {WORDS[(5 * i) % 15]}(x)" + " + x" * (i % 6) for i in range(17)]
BATCH = 3


@pytest.fixture(scope="module")
def encoders(tiny_bert_dir, tiny_roberta_dir):
    return {"bert": load_encoder(str(tiny_bert_dir)), "roberta": load_encoder(str(tiny_roberta_dir))}


def inputs_of(encoder):
    return side_inputs(encoder, QUERIES, 24, BATCH), side_inputs(encoder, CODES, 40, BATCH)


def embeddings(encoder, conditions, layout, means=None):
    got = {}
    run_conditions(encoder, *inputs_of(encoder), conditions, lambda c, q, k: got.__setitem__(c.name, (q, k)),
                   means, layout, progress=False)
    assert set(got) == {c.name for c in conditions}
    return got


def layouts(encoder):
    """Chunks of one batch, of a few batches (boundaries inside a CSN batch of 4 queries), and the whole side; with
    groups of one condition, of two, and of a whole layer."""
    query, code = inputs_of(encoder)
    few = 2 * max(code.batch_tokens())
    return [Layout({"query": 1, "code": 1}, 1), Layout({"query": 1, "code": 1}, 0), Layout({"code": few}, 2),
            Layout({"query": few, "code": 0}, 1), Layout({"query": 0, "code": 1}, 3)]


@pytest.mark.parametrize("model", ["bert", "roberta"])
@pytest.mark.parametrize("mode", ["zero", "mean", "resample"])
@pytest.mark.parametrize("side", ["query", "code", "both"])
def test_every_chunk_size_gives_the_unchunked_ranks(encoders, model, mode, side):
    encoder = encoders[model]
    means = {"query": head_means(encoder, QUERIES[::-1], 24, BATCH),
             "code": head_means(encoder, CODES[::-1], 40, BATCH)}
    conditions = [Condition(f"L{layer}H{head}", (HeadId(layer, head),), mode, side)
                  for layer in range(encoder.n_layers) for head in (0, 2, 3)]
    conditions.append(Condition("set", (HeadId(0, 1), HeadId(1, 2)), mode, side))
    whole = embeddings(encoder, conditions, WHOLE, means)
    baseline = {"query": encoder.encode(QUERIES, 24, BATCH, progress=False),
                "code": encoder.encode(CODES, 40, BATCH, progress=False)}
    gold = np.arange(len(QUERIES))
    for layout in layouts(encoder):
        chunked = embeddings(encoder, conditions, layout, means)
        for condition in conditions:
            for got, expected in zip(chunked[condition.name], whole[condition.name]):
                assert (got is None) == (expected is None)
                assert got is None or torch.equal(got, expected), (layout, condition)
            q, c = (baseline["query"] if chunked[condition.name][0] is None else chunked[condition.name][0],
                    baseline["code"] if chunked[condition.name][1] is None else chunked[condition.name][1])
            qw, cw = (baseline["query"] if whole[condition.name][0] is None else whole[condition.name][0],
                      baseline["code"] if whole[condition.name][1] is None else whole[condition.name][1])
            for protocol in ("whole_pool", "csn"):
                ranks = evaluate_protocol(protocol, q, c, gold, csn_batch_size=4, block_rows=5).ranks
                expected = evaluate_protocol(protocol, qw, cw, gold, csn_batch_size=4).ranks
                assert np.array_equal(ranks, expected), (layout, condition, protocol)


def test_a_layout_splits_the_pool_into_whole_batches_in_order(encoders):
    encoder = encoders["bert"]
    _, code = inputs_of(encoder)
    sizes = code.batch_tokens()
    for limit in (1, sizes[0], sizes[0] + sizes[1], 10**9):
        chunks = Layout({"code": limit}).chunks("code", code)
        assert [b for chunk in chunks for b in chunk] == code.batches            # every batch once, in order
        assert all(len(chunk) == 1 or sum(b.input_ids.numel() for b in chunk) <= limit for chunk in chunks)
    assert len(Layout({"code": 1}).chunks("code", code)) == len(code.batches)
    assert Layout().chunks("code", code) == [code.batches]


def test_the_plan_chunks_what_does_not_fit_and_keeps_to_the_budget(encoders):
    encoder = encoders["bert"]
    query, code = inputs_of(encoder)
    inputs = {"query": query, "code": code}
    conditions = build_conditions("*", True, encoder.n_layers, encoder.n_heads)
    roomy = plan_memory(encoder, inputs, conditions, Budget(2**40, "test", 0))
    assert roomy.layout == WHOLE and not roomy.chunked
    whole_cache = roomy.whole_cache
    assert whole_cache == cache_bytes(encoder, sum(query.batch_tokens()) + sum(code.batch_tokens()), 4)
    fixed_parts = roomy.baseline + roomy.scores + roomy.forward
    # Room for a third of the cache: chunked, and within the budget.
    tight = Budget(fixed_parts + 3 * roomy.condition + whole_cache // 3, "test", 0)
    plan = plan_memory(encoder, inputs, conditions, tight)
    assert plan.chunked and plan.planned_peak <= tight.bytes and plan.cache <= whole_cache // 3
    assert embeddings(encoder, conditions[:6], plan.layout).keys() == {c.name for c in conditions[:6]}
    # Room for two conditions beside the largest batch of each side: groups of two, one batch per chunk.
    least = cache_bytes(encoder, max(query.batch_tokens()) + max(code.batch_tokens()), 4)
    two = Budget(fixed_parts + least + 3 * roomy.condition - 1, "test", 0)
    plan = plan_memory(encoder, inputs, conditions, two)
    assert plan.group_size == 2 and plan.planned_peak <= two.bytes
    assert plan.chunks == {"query": len(query.batches), "code": len(code.batches)}
    # Room for the ablation but not for the gradient's pass (a batch's graph through every layer): refused when the
    # run computes the gradient.
    from ablation.plan import gradient_bytes
    enough = Budget(fixed_parts + roomy.condition + least, "ablation.max_memory_gb=0.002", 0)
    assert gradient_bytes(encoder, inputs, 4) > enough.bytes
    plan_memory(encoder, inputs, conditions, enough)
    with pytest.raises(UserError, match="ablation.max_memory_gb=0.002 cannot hold the gradient estimate's pass"):
        plan_memory(encoder, inputs, conditions, enough, gradient=True)
    # Too small for one condition and one batch per side: refused, naming the setting.
    with pytest.raises(UserError, match="ablation.max_memory_gb=0.0001 cannot hold the ablation"):
        plan_memory(encoder, inputs, conditions, Budget(fixed_parts + roomy.condition, "ablation.max_memory_gb=0.0001",
                                                        0))


def test_the_gradient_loss_in_blocks_equals_the_whole_loss():
    generator = torch.Generator().manual_seed(0)
    q, c = torch.randn(11, 8, generator=generator), torch.randn(7, 8, generator=generator)
    gold = np.array([0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3])
    q_leaf, c_leaf = q.clone().requires_grad_(True), c.clone().requires_grad_(True)
    retrieval_loss(q_leaf, c_leaf, gold, 0.1).backward()
    for rows in (1, 4, 11, 100):
        q_grad, c_grad = loss_gradients(q, c, gold, 0.1, block_rows=rows)
        torch.testing.assert_close(q_grad, q_leaf.grad, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(c_grad, c_leaf.grad, rtol=1e-5, atol=1e-7)


def test_shards_cover_every_condition_once():
    conditions = build_conditions("*", True, 3, 5)
    shares = [shard(conditions, i, 4) for i in range(1, 5)]
    assert sorted(c.name for share in shares for c in share) == sorted(c.name for c in conditions)
    assert {len(share) for share in shares} == {3, 4}


FAST = ["ablation.n_bootstrap=300", "ablation.n_permutations=300", "progress=false", "model.batch_size=5"]


def test_shards_aggregate_to_one_runs_table(tmp_path, pairs_file, tiny_bert_dir):
    common = [f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", *FAST]
    assert main(["ablate", *common, f"output_dir={tmp_path / 'one'}"]) == 0
    runs = tmp_path / "runs"
    for i in (1, 2, 3):
        assert main(["ablate", *common, f"runs_dir={runs}", f"ablation.shard={i}/3",
                     "ablation.max_memory_gb=4"]) == 0
    (study,) = [p for p in runs.iterdir() if p.is_dir() and p.name != "sweeps"]
    folders = sorted(p.name for p in (study / "ablate").iterdir())
    assert [name.rsplit("-", 1)[1] for name in folders] == ["shard1of3", "shard2of3", "shard3of3"]
    assert len({name.rsplit("-", 1)[0] for name in folders}) == 1                  # one study key for all shards
    assert json.loads((study / "ablate" / folders[0] / "run.json").read_text())["shard"] == "1/3"
    assert main(["aggregate", str(study)]) == 0
    one = pd.read_csv(tmp_path / "one" / "importance.csv")
    assert one["grad_score"].notna().all()                                        # a whole map: the gradient on
    assert (study / "aggregate" / "importance.csv").read_text() == (tmp_path / "one" / "importance.csv").read_text()


def test_one_head_runs_skip_the_gradient_unless_asked(tmp_path, pairs_file, tiny_bert_dir):
    common = [f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", *FAST, "ablation.heads=1.2"]
    assert main(["ablate", *common, f"output_dir={tmp_path / 'plain'}"]) == 0
    assert not (tmp_path / "plain" / "grad_scores.csv").exists()
    assert pd.read_csv(tmp_path / "plain" / "importance.csv")["grad_score"].isna().all()
    assert main(["ablate", *common, "ablation.gradient=true", f"output_dir={tmp_path / 'asked'}"]) == 0
    assert (tmp_path / "asked" / "grad_scores.csv").is_file()


def test_bf16_is_reported_against_fp32_ranks_computed_apart(tmp_path, pairs_file, tiny_bert_dir):
    out = tmp_path / "bf16"
    assert main(["ablate", f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", *FAST, "ablation.heads=0.1,1.3",
                 "ablation.precision=bf16", f"output_dir={out}"]) == 0
    record = json.loads((out / "run.json").read_text())
    agreement = record["precision"]
    assert agreement["precision"] == "bf16" and agreement["condition"]["name"] == "L0H1"
    assert record["memory"]["measured_peak"] > 0 and record["memory"]["layout"]["chunk_tokens"] == {}
    # The same numbers, independently: the model encoded in fp32 and in bf16, ranked by a plain score matrix.
    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    queries, codes = [r["query"] for r in rows], [r["code"] for r in rows]
    encoder = load_encoder(str(tiny_bert_dir))

    def ranks():
        q, c = encoder.encode(queries, 128, 5, progress=False), encoder.encode(codes, 256, 5, progress=False)
        scores = q @ c.T
        return (scores >= scores.diagonal()[:, None]).sum(1).numpy()
    fp32 = ranks()
    set_precision(encoder, "bf16")
    bf16 = ranks()
    assert agreement["baseline"]["n_queries"] == len(rows)
    assert agreement["baseline"]["ranks_differing"] == int((fp32 != bf16).sum())
    assert agreement["baseline"]["mrr_fp32"] == pytest.approx((1 / fp32).mean())
    assert agreement["baseline"]["mrr"] == pytest.approx(record["baseline_mrr"]) == pytest.approx((1 / bf16).mean())
    # What the W&B run shows of it.
    from ablation.record import AblationRecord
    from tracking.run_logs import resource_summary
    summary = resource_summary(AblationRecord.read(out))
    assert summary["precision/baseline_ranks_differing"] == agreement["baseline"]["ranks_differing"]
    assert summary["memory/measured_peak_gib"] == record["memory"]["measured_peak"] / 2**30


def test_an_interrupted_baseline_keeps_its_finished_parts(tmp_path, encoders, monkeypatch):
    import heads.retrieval as retrieval
    from codesearch.records import Example, RetrievalTask
    from heads.settings import ModelConfig

    encoder = encoders["roberta"]
    task = RetrievalTask(source="test", form="pairs", examples=[Example(id=f"q{i}", query=q, code=c, language="python")
                                                               for i, (q, c) in enumerate(zip(QUERIES, CODES))],
                         candidate_ids=[f"q{i}" for i in range(len(CODES))], candidates=CODES,
                         gold=list(range(len(CODES))), paired=True)
    model = ModelConfig(max_query_length=24, max_code_length=40, batch_size=BATCH)
    monkeypatch.setattr(retrieval, "PART_BATCHES", 2)
    encoded = []
    real = type(encoder).forward_batches

    def dies_in_the_third_part_of_code(self, *args, **kwargs):
        for item in real(self, *args, **kwargs):
            encoded.append(item[0].input_ids.shape[1])
            if len(encoded) == len(inputs_of(encoder)[0].batches) + 5:
                raise KeyboardInterrupt
            yield item
    monkeypatch.setattr(type(encoder), "forward_batches", dies_in_the_third_part_of_code)
    with pytest.raises(KeyboardInterrupt):
        retrieval.task_embeddings(encoder, task, model, tmp_path, progress=False)
    parts = sorted(p.name for p in (tmp_path / "baseline").glob("candidates-*.parts/*.pt"))
    assert parts == ["0.pt", "1.pt"]                                 # two whole parts of code kept, not the third
    monkeypatch.setattr(type(encoder), "forward_batches", real)
    counted = []
    monkeypatch.setattr(type(encoder), "forward_batches",
                        lambda self, *a, **k: (counted.append(1) or item for item in real(self, *a, **k)))
    resumed = retrieval.task_embeddings(encoder, task, model, tmp_path, progress=False)
    n_code_batches = len(inputs_of(encoder)[1].batches)
    assert len(counted) == n_code_batches - 4                        # only what the parts did not hold
    assert torch.equal(resumed.candidates, encoder.encode(CODES, 40, BATCH, progress=False))
    assert torch.equal(resumed.queries, encoder.encode(QUERIES, 24, BATCH, progress=False))
    assert not list((tmp_path / "baseline").glob("*.parts"))         # the side is whole: its parts are gone
