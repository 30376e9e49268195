"""The cross-encoder: its pair encoding, its scores against the model's own forward, the protocols' ranks against
independent computations (transformers alone, CodeBERT's mrr.py loop), and the errors of bad input."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CODES, QUERIES
from tiny_models import make_tiny_cross_encoder

from codesearch.errors import UserError
from codesearch.records import Example, RetrievalTask
from experiments.cli import main
from heads.cross_encoder import CrossEncoder
from heads.models import ModelNotAvailable, load_encoder
from heads.pair_retrieval import csn_pairs, rerank_pairs, whole_pool_pairs
from heads.pairs import pair_inputs

LONG_CODE = "def long(x):\n" + "\n".join(f"    x = x + {i} * (x - {i})" for i in range(40)) + "\n    return x"


def all_pairs(n_queries, n_codes):
    return np.array([(q, c) for q in range(n_queries) for c in range(n_codes)])


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_pairs_are_the_tokenizers_own_pair_encoding_and_scores_the_models_own_logits(tmp_path, family):
    folder = make_tiny_cross_encoder(tmp_path / family, family=family)
    encoder = load_encoder(str(folder))
    assert isinstance(encoder, CrossEncoder) and encoder.output_dim == 1
    queries, codes = QUERIES[:3], [CODES[0], LONG_CODE, CODES[5]]
    inputs = pair_inputs(encoder, queries, codes, all_pairs(3, 3), max_length=48, max_query_length=32, batch_size=4)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    seen = []
    for batch in inputs.batches:
        with torch.inference_mode():
            hidden = encoder.backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                      token_type_ids=batch.token_type_ids).last_hidden_state
            scores = encoder.pool(hidden, batch.attention_mask)[:, 0]
        for row, position in enumerate(batch.positions):
            q, c = inputs.pairs[position]
            expected = tokenizer(queries[q], codes[c], truncation="only_second", max_length=48, return_tensors="pt")
            n = int(batch.attention_mask[row].sum())
            assert batch.input_ids[row, :n].tolist() == expected["input_ids"][0].tolist()
            if "token_type_ids" in expected:
                assert batch.token_type_ids[row, :n].tolist() == expected["token_type_ids"][0].tolist()
            with torch.no_grad():
                logits = model(**expected).logits[0]
            assert scores[row].item() == pytest.approx(logits[1].item(), abs=1e-5)   # padding changes nothing
            seen.append(position)
    assert sorted(seen) == list(range(9))
    assert inputs.lengths.max() == 48 and inputs.batch_tokens() == [b.input_ids.numel() for b in inputs.batches]


def test_log_odds_and_one_label_scores(tmp_path):
    two = load_encoder(str(make_tiny_cross_encoder(tmp_path / "two")), pair_score="log_odds")
    one = load_encoder(str(make_tiny_cross_encoder(tmp_path / "one", labels=1)))
    logits = torch.tensor([[0.5, 2.0], [1.0, -1.0]])
    assert two.score_logits(logits)[:, 0].tolist() == [1.5, -2.0]
    assert one.score == "logit" and one.score_logits(torch.tensor([[0.25], [3.0]]))[:, 0].tolist() == [0.25, 3.0]


def task_of(n, pool=None):
    pool = pool or n
    examples = [Example(f"q{i}", f"query {i}", f"code {i % pool}", "python") for i in range(n)]
    return RetrievalTask("test", "pairs", examples, [f"c{j}" for j in range(pool)], [f"code {j}" for j in range(pool)],
                         [i % pool for i in range(n)])


def test_csn_ranks_are_codeberts_mrr_loop():
    rng = np.random.default_rng(0)
    n, batch = 23, 5
    task = task_of(n)
    pairs = csn_pairs(task, batch)
    matrix = rng.integers(0, 4, size=(n, n)).astype(float)   # ties on purpose: they count against the model
    scores = matrix[pairs.pairs()[:, 0], pairs.pairs()[:, 1]]
    result = pairs.ranks(scores)
    # CodeBERT's mrr.py: each batch's query i scored against the batch's codes, rank = sum(scores >= correct).
    expected = []
    for start in range(0, n - n % batch, batch):
        for i in range(start, start + batch):
            row = matrix[i, start:start + batch]
            expected.append(int(np.sum(row >= row[i - start])))
    assert result.ranks.tolist() == expected and result.query_index.tolist() == list(range(20))
    assert result.rr.tolist() == pytest.approx([1 / r for r in expected]) and "dropped" in result.notes
    with pytest.raises(UserError, match="eval.csn_batch_size=30 is larger than the 23 queries"):
        csn_pairs(task, 30)


def test_rerank_keeps_the_first_stage_rank_of_a_gold_outside_the_top_k():
    task = task_of(4, pool=6)
    query_emb = torch.eye(6)[:4]
    # Candidate j's embedding: query j's direction for j < 4, plus two strong distractors for query 0.
    cand_emb = torch.eye(6)
    cand_emb[4] = torch.tensor([2.0, 0, 0, 0, 0, 0])
    cand_emb[5] = torch.tensor([1.5, 0.5, 0, 0, 0, 0])
    cand_emb[1, 0] = 1.2
    pairs = rerank_pairs(task, query_emb, cand_emb, k=2, rank_cutoff=0, retriever="first")
    assert pairs.first_stage.ranks.tolist() == [4, 1, 1, 1]
    top = pairs.candidate.reshape(4, 2)
    assert top[0].tolist() == [4, 5] and pairs.gold_pair[0] == -1
    scores = np.zeros(8)
    scores[2:4] = [0.1, 0.9]    # query 1: its gold (candidate 1) now second
    result = pairs.ranks(scores)
    assert result.ranks[0] == 4       # outside the top 2: the first stage's rank
    q1 = top[1].tolist()
    assert result.ranks[1] == (1 if q1.index(1) == 1 else 2)
    with pytest.raises(UserError, match="eval.rerank_k=7 is larger than the pool of 6"):
        rerank_pairs(task, query_emb, cand_emb, k=7, rank_cutoff=0, retriever="first")


def test_whole_pool_pairs_rank_against_every_candidate():
    task = task_of(3, pool=4)
    pairs = whole_pool_pairs(task, rank_cutoff=2)
    scores = np.array([[1, 0, 2, 3], [0, 5, 1, 1], [2, 2, 2, 0]], dtype=float)
    result = pairs.ranks(scores[pairs.pairs()[:, 0], pairs.pairs()[:, 1]])
    assert result.ranks.tolist() == [3, 1, 3] and result.rr.tolist() == [0.0, 1.0, 0.0]


def test_evaluate_a_cross_encoder_against_transformers_alone(tmp_path, pairs_file, tiny_cross_dir, tiny_bert_dir):
    out = tmp_path / "run"
    assert main(["evaluate", f"data.path={pairs_file}", f"model.name={tiny_cross_dir}", f"output_dir={out}",
                 "eval.protocol=csn", "eval.csn_batch_size=5", "model.max_pair_length=40",
                 f"eval.retriever={tiny_bert_dir}", "model.batch_size=7", "progress=false"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kind"] == "cross_encoder" and metrics["protocol"] == "csn" and metrics["n_pairs"] == 50
    per_query = pd.read_csv(out / "per_query.csv")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_cross_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_cross_dir).eval()
    expected = []
    for start in (0, 5):
        for i in range(start, start + 5):
            batch = tokenizer([QUERIES[i]] * 5, CODES[start:start + 5], truncation="only_second", max_length=40,
                              padding=True, return_tensors="pt")
            with torch.no_grad():
                scores = model(**batch).logits[:, 1].numpy()
            expected.append(int(np.sum(scores >= scores[i - start])))
    assert per_query["rank"].tolist() == expected
    assert metrics["mrr"] == pytest.approx(np.mean(1 / np.array(expected)))
    assert metrics["retriever"]["summary"]["protocol"] == "csn"
    assert len(pd.read_csv(out / "per_query_retriever.csv")) == 10


def test_bad_input_is_named_before_any_work(tmp_path, pairs_file, tiny_cross_dir, tiny_bert_dir, capsys):
    def error(*overrides):
        assert main(["evaluate", f"data.path={pairs_file}", "progress=false", *overrides]) == 2
        return capsys.readouterr().err

    assert "no sequence-classification head" in error(f"model.name={tiny_bert_dir}", "model.kind=cross_encoder")
    assert "is a sequence classifier" in error(f"model.name={tiny_cross_dir}", "model.kind=bi_encoder")
    assert "name it with eval.retriever" in error(f"model.name={tiny_cross_dir}", "eval.protocol=rerank")
    assert "is a bi-encoder" in error(f"model.name={tiny_bert_dir}", "eval.protocol=rerank")
    assert "is a sequence classifier" in error(f"model.name={tiny_cross_dir}", "eval.protocol=rerank",
                                               f"eval.retriever={tiny_cross_dir}")
    assert "eval.csn_batch_size=1000 is larger than the 12 queries" in error(f"model.name={tiny_cross_dir}",
                                                                               "eval.protocol=csn")
    three = make_tiny_cross_encoder(tmp_path / "three", labels=3)
    with pytest.raises(ModelNotAvailable, match="3 labels"):
        load_encoder(str(three))
    assert not Path("runs").exists() or not any(Path("runs").rglob("metrics.json"))
