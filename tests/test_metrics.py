"""MRR, ranks and ties under both protocols, against hand-worked cases and scipy."""
import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from codesearch.metrics import (
    csn_batches,
    ranks_from_scores,
    reciprocal_ranks,
    whole_pool,
)


def test_ranks_hand_worked():
    scores = np.array([
        [0.9, 0.1, 0.5],   # gold 0 is the best: rank 1
        [0.9, 0.1, 0.5],   # gold 1 is the worst: rank 3
        [0.2, 0.7, 0.7],   # gold 2 ties with candidate 1: the tie counts against it, rank 2
        [0.4, 0.4, 0.4],   # a three-way tie: rank 3
    ])
    gold = np.array([0, 1, 2, 0])
    assert ranks_from_scores(scores, gold).tolist() == [1, 3, 2, 3]


def test_ranks_agree_with_scipy_rankdata_max():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(50, 40)).astype(np.float32)  # many ties on purpose
    gold = rng.integers(0, 40, size=50)
    expected = [rankdata(-row, method="max")[g] for row, g in zip(scores, gold)]
    assert ranks_from_scores(scores, gold).tolist() == [int(e) for e in expected]


def test_reciprocal_rank_cutoff():
    ranks = np.array([1, 2, 1000, 1001])
    assert reciprocal_ranks(ranks, cutoff=1000).tolist() == [1.0, 0.5, 0.001, 0.0]
    assert reciprocal_ranks(ranks, cutoff=0)[-1] == pytest.approx(1 / 1001)


def test_whole_pool_hand_worked():
    # Unit vectors: dot products are easy to read.
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [1.0, 0.0]])
    gold = np.array([0, 1, 2])
    result = whole_pool(q, c, gold, rank_cutoff=0)
    # q0: gold 0 scores 1.0, candidate 3 also 1.0 (tie) -> rank 2.
    # q1: gold 1 scores 1.0, candidate 2 scores 0.8 -> rank 1.
    # q2: gold 2 scores 0.6; candidates 0 and 3 score 1.0 -> rank 3.
    assert result.ranks.tolist() == [2, 1, 3]
    assert result.mrr == pytest.approx((1 / 2 + 1 + 1 / 3) / 3)
    assert result.recall_at(1) == pytest.approx(1 / 3)
    assert result.recall_at(5) == 1.0
    assert result.candidates_per_query == 4


def test_whole_pool_cutoff_zeroes_deep_ranks():
    q = torch.zeros(1, 2)
    q[0, 0] = 1.0
    c = torch.zeros(5, 2)
    c[:, 0] = torch.tensor([0.1, 0.9, 0.8, 0.7, 0.6])
    result = whole_pool(q, c, np.array([0]), rank_cutoff=3)
    assert result.ranks.tolist() == [5]
    assert result.rr.tolist() == [0.0]


def test_csn_batches_use_only_their_own_golds_and_drop_incomplete_last_batch():
    # Five queries with batch size 2: batches {0,1} and {2,3}; query 4 is dropped, as CodeSearchNet does.
    q = torch.eye(5)
    c = torch.eye(5)
    c[1] = torch.tensor([1.0, 0.5, 0, 0, 0])  # scores 1.0 for query 0, tying with its gold
    gold = np.arange(5)
    result = csn_batches(q, c, gold, batch_size=2)
    assert result.query_index.tolist() == [0, 1, 2, 3]
    # Query 0 scores 1.0 on its gold and 1.0 on candidate 1: a tie, rank 2. Query 1: 0.5 vs 0 -> rank 1.
    assert result.ranks.tolist() == [2, 1, 1, 1]
    assert "dropped" in result.notes
    assert result.candidates_per_query == 2


def test_csn_pool_smaller_than_a_batch_is_one_batch():
    q = torch.eye(3)
    c = torch.eye(3)
    result = csn_batches(q, c, np.arange(3), batch_size=1000)
    assert result.query_index.tolist() == [0, 1, 2]
    assert result.ranks.tolist() == [1, 1, 1]
    assert "2 distractors" in result.notes


def test_csn_batch_excludes_candidates_of_other_batches():
    # Query 2's gold is weak, but the strong distractor (candidate 0) sits in another batch: rank 1.
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.1], [0.0, 1.0]])
    csn = csn_batches(q, c, np.arange(4), batch_size=2)
    pool = whole_pool(q, c, np.arange(4), rank_cutoff=0)
    assert csn.ranks[2] == 1
    assert pool.ranks[2] == 2  # against the whole pool, candidate 0 beats it
    # Queries 1 and 3 have identical candidates 1 and 3: a tie in the whole pool, but apart in CSN batches.
    assert pool.ranks[1] == 2 and csn.ranks[1] == 1


def test_csn_shared_gold_counts_once():
    q = torch.tensor([[1.0, 0.0], [0.9, 0.1]])
    c = torch.tensor([[1.0, 0.0]])
    result = csn_batches(q, c, np.array([0, 0]), batch_size=2)
    assert result.ranks.tolist() == [1, 1]


def test_non_finite_scores_are_an_error():
    with pytest.raises(ValueError, match="NaN"):
        ranks_from_scores(np.array([[np.nan, 1.0]]), np.array([0]))
