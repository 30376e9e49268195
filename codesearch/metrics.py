"""Retrieval metrics under the two protocols of the literature. Their numbers cannot be compared.

- `whole_pool` (GraphCodeBERT, UniXcoder): each query is ranked against every candidate of the pool.
  Their evaluation scripts give a reciprocal rank of 0 when the gold is not in the top 1000
  (`rank_cutoff`; 0 turns the cut-off off).
- `csn` (CodeSearchNet): queries are taken in consecutive batches of 1000; each is ranked against the 1000
  gold codes of its batch (its own and 999 distractors). An incomplete last batch is dropped, as the
  CodeSearchNet evaluation drops it; a pool smaller than one batch is evaluated as one smaller batch.

In both, ties count against the model: the rank is the number of candidates scoring at least as high as
the gold (the gold included), as CodeSearchNet's `compute_ranks` counts `distances <= correct`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from .settings import Protocol

# The protocols embeddings are ranked under; rerank is a cross-encoder's (heads.pair_retrieval).
PROTOCOLS = (Protocol.whole_pool, Protocol.csn)


@dataclass
class ProtocolResult:
    """Per-query ranks under one protocol, for the queries it evaluates (`query_index`)."""
    protocol: str
    query_index: np.ndarray   # [n] int, positions in the task's query list
    ranks: np.ndarray         # [n] int, 1-based, ties counted against the model
    rr: np.ndarray            # [n] float, reciprocal rank (0 beyond the cut-off)
    candidates_per_query: int  # the pool size, or the CSN batch size actually used
    notes: str = ""

    @property
    def mrr(self) -> float:
        return float(self.rr.mean()) if len(self.rr) else float("nan")

    def recall_at(self, k: int) -> float:
        return float((self.ranks <= k).mean()) if len(self.ranks) else float("nan")

    def summary(self) -> ProtocolSummary:
        return ProtocolSummary(protocol=str(self.protocol), mrr=self.mrr, recall_at_1=self.recall_at(1),
                               recall_at_5=self.recall_at(5), recall_at_10=self.recall_at(10),
                               n_queries=int(len(self.ranks)), candidates_per_query=self.candidates_per_query,
                               notes=self.notes)


@dataclass
class ProtocolSummary:
    """What the outputs say of a protocol's result."""
    protocol: str
    mrr: float
    recall_at_1: float
    recall_at_5: float
    recall_at_10: float
    n_queries: int
    candidates_per_query: int
    notes: str = ""


@contextlib.contextmanager
def full_float32():
    """Scores in full float32 even when the model runs with TensorFloat-32 products (`ablation.precision=tf32` turns
    on a process-wide CUDA switch): a rank must not move because the encoder's precision did."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def ranks_from_scores(scores: np.ndarray | torch.Tensor, gold: np.ndarray) -> np.ndarray:
    """1-based rank of each row's gold column; a tie with the gold counts against it.

    scores: [queries, candidates]; gold: [queries] column index of each query's answer.
    """
    scores = torch.as_tensor(scores)
    gold_t = torch.as_tensor(np.asarray(gold), dtype=torch.long, device=scores.device)
    if not torch.isfinite(scores).all():
        raise ValueError("retrieval scores contain NaN or infinity: the encoder produced invalid embeddings")
    gold_scores = scores.gather(1, gold_t[:, None])
    return (scores >= gold_scores).sum(dim=1).cpu().numpy().astype(np.int64)


def reciprocal_ranks(ranks: np.ndarray, cutoff: int = 0) -> np.ndarray:
    rr = 1.0 / ranks.astype(np.float64)
    if cutoff > 0:
        rr[ranks > cutoff] = 0.0
    return rr


def whole_pool(query_emb: torch.Tensor, cand_emb: torch.Tensor, gold: np.ndarray,
               rank_cutoff: int = 1000, chunk_size: int = 1024) -> ProtocolResult:
    """Rank every query against the whole candidate pool (scores are dot products of the embeddings)."""
    gold = np.asarray(gold)
    ranks = np.empty(len(gold), dtype=np.int64)
    for start in range(0, len(gold), chunk_size):
        stop = min(start + chunk_size, len(gold))
        with full_float32():
            scores = query_emb[start:stop] @ cand_emb.T
        ranks[start:stop] = ranks_from_scores(scores, gold[start:stop])
    notes = f"reciprocal rank 0 beyond rank {rank_cutoff}" if rank_cutoff > 0 else ""
    return ProtocolResult("whole_pool", np.arange(len(gold)), ranks, reciprocal_ranks(ranks, rank_cutoff),
                          candidates_per_query=int(cand_emb.shape[0]), notes=notes)


def csn_batches(query_emb: torch.Tensor, cand_emb: torch.Tensor, gold: np.ndarray,
                batch_size: int = 1000) -> ProtocolResult:
    """CodeSearchNet's protocol: consecutive batches of `batch_size` queries, each ranked among its batch's golds."""
    gold = np.asarray(gold)
    n = len(gold)
    notes = ""
    if n < batch_size:
        bounds = [(0, n)]
        notes = f"pool of {n} is smaller than one batch of {batch_size}: one batch, {n - 1} distractors"
    else:
        full = n // batch_size
        bounds = [(b * batch_size, (b + 1) * batch_size) for b in range(full)]
        if n % batch_size:
            notes = f"the incomplete last batch ({n % batch_size} queries) is dropped, as CodeSearchNet does"
    index, ranks = [], []
    for start, stop in bounds:
        batch_gold = gold[start:stop]
        # The batch's candidates are its queries' golds; a code shared by two queries counts once.
        columns, local_gold = np.unique(batch_gold, return_inverse=True)
        with full_float32():
            scores = query_emb[start:stop] @ cand_emb[torch.as_tensor(columns, device=cand_emb.device)].T
        ranks.append(ranks_from_scores(scores, local_gold))
        index.append(np.arange(start, stop))
    ranks_arr = np.concatenate(ranks) if ranks else np.empty(0, dtype=np.int64)
    index_arr = np.concatenate(index) if index else np.empty(0, dtype=np.int64)
    per_query = min(batch_size, n)
    return ProtocolResult("csn", index_arr, ranks_arr, reciprocal_ranks(ranks_arr), per_query, notes)


def evaluate_protocol(protocol: str, query_emb: torch.Tensor, cand_emb: torch.Tensor, gold: np.ndarray,
                      rank_cutoff: int = 1000, csn_batch_size: int = 1000, block_rows: int = 1024) -> ProtocolResult:
    """Per-query ranks under `protocol`; the embeddings may be on any device (the scores are computed there),
    whole_pool scores `block_rows` queries at once."""
    if protocol == "whole_pool":
        return whole_pool(query_emb, cand_emb, gold, rank_cutoff=rank_cutoff, chunk_size=block_rows)
    if protocol == "csn":
        return csn_batches(query_emb, cand_emb, gold, batch_size=csn_batch_size)
    raise ValueError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
