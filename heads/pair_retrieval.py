"""Retrieval with a cross-encoder: which (query, candidate) pairs a protocol scores, the pairs' unmasked scores (kept
in the study's folder, as the bi-encoder's embeddings are), and each query's rank from its pairs' scores.

A cross-encoder scores every pair it ranks, so a protocol is a set of pairs (`PairSet`), grouped by query:
- `csn` (CodeBERT's): consecutive batches of N queries (`eval.csn_batch_size`, 1,000 in the paper); each query is
  ranked among the N codes of its batch, its own and N-1 distractors; an incomplete last batch is dropped, as
  CodeSearchNet drops it;
- `rerank`: a first-stage bi-encoder (`eval.retriever`) ranks the whole pool and its top k (`eval.rerank_k`) are
  re-scored; the final ranking is those k re-ranked, then the rest in the first stage's order, so a gold outside the
  top k keeps its first-stage rank (reciprocal rank 0 beyond `eval.rank_cutoff`, as whole_pool);
- `whole_pool`: every query against every candidate (queries × candidates pairs).
Ties count against the model in all, as `codesearch.metrics` counts them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from codesearch.errors import UserError
from codesearch.hashing import content_hash
from codesearch.metrics import ProtocolResult, full_float32, reciprocal_ranks, whole_pool
from codesearch.records import RetrievalTask

from .cross_encoder import CrossEncoder
from .encoder import Encoder
from .pairs import PairInputs, pair_inputs
from .retrieval import kept_outputs, task_embeddings
from .settings import EvalConfig, ModelConfig


@dataclass
class PairSet:
    """The pairs one protocol scores, grouped by query: query i of `query_index` owns pairs `starts[i]:starts[i+1]`,
    pair p pairs that query with candidate `candidate[p]`; `gold_pair[i]` is the pair holding its gold (-1 where the
    gold is not among them: rerank's top k missed it), `outside_rank[i]` the rank such a gold keeps."""
    protocol: str
    query_index: np.ndarray      # [m] positions in the task's queries
    starts: np.ndarray           # [m + 1]
    candidate: np.ndarray        # [n_pairs]
    gold_pair: np.ndarray        # [m]
    outside_rank: np.ndarray     # [m]
    candidates_per_query: int
    rank_cutoff: int = 0         # reciprocal rank 0 beyond this rank (0: none)
    notes: str = ""
    first_stage: ProtocolResult | None = None    # rerank: the retriever's whole-pool ranks on the same task

    @property
    def n_pairs(self) -> int:
        return len(self.candidate)

    def pairs(self) -> np.ndarray:
        """[n_pairs, 2]: each pair's (query, candidate) index in the task."""
        queries = np.repeat(self.query_index, np.diff(self.starts))
        return np.stack([queries, self.candidate], axis=1)

    def fingerprint(self) -> str:
        return content_hash([self.protocol, self.query_index.tolist(), self.starts.tolist(), self.candidate.tolist(),
                             self.rank_cutoff])

    def ranks(self, scores: np.ndarray | torch.Tensor) -> ProtocolResult:
        """Every query's rank from its pairs' scores ([n_pairs]): the pairs scoring at least as high as its gold."""
        scores = torch.as_tensor(scores).reshape(-1).double().cpu().numpy()
        if len(scores) != self.n_pairs:
            raise ValueError(f"{len(scores)} scores for {self.n_pairs} pairs")
        if not np.isfinite(scores).all():
            raise ValueError("cross-encoder scores contain NaN or infinity: the model produced invalid scores")
        group = np.repeat(np.arange(len(self.query_index)), np.diff(self.starts))
        inside = self.gold_pair >= 0
        gold_score = np.full(len(self.query_index), np.inf)
        gold_score[inside] = scores[self.gold_pair[inside]]
        at_least = scores >= gold_score[group]
        ranks = np.bincount(group[at_least], minlength=len(self.query_index)).astype(np.int64)
        ranks[~inside] = self.outside_rank[~inside]
        return ProtocolResult(self.protocol, self.query_index.copy(), ranks,
                              reciprocal_ranks(ranks, self.rank_cutoff), self.candidates_per_query, self.notes)


def csn_pairs(task: RetrievalTask, batch_size: int) -> PairSet:
    """CodeBERT's protocol: each query of each complete batch of `batch_size` against the batch's codes."""
    n = len(task)
    if batch_size > n:
        raise UserError(f"eval.csn_batch_size={batch_size} is larger than the {n} queries evaluated: a cross-encoder "
                        f"ranks each query among the codes of its batch of N; give eval.csn_batch_size <= {n}")
    gold = np.asarray(task.gold)
    full = n // batch_size
    index, starts, candidate, gold_pair = [], [0], [], []
    for b in range(full):
        batch = np.arange(b * batch_size, (b + 1) * batch_size)
        columns, local = np.unique(gold[batch], return_inverse=True)   # a code shared by two queries counts once
        for query, position in zip(batch, local):
            gold_pair.append(starts[-1] + int(position))
            index.append(query)
            candidate.append(columns)
            starts.append(starts[-1] + len(columns))
    notes = f"the incomplete last batch ({n % batch_size} queries) is dropped, as CodeSearchNet does" \
        if n % batch_size else ""
    return PairSet("csn", np.asarray(index, dtype=np.int64), np.asarray(starts, dtype=np.int64),
                   np.concatenate(candidate).astype(np.int64), np.asarray(gold_pair, dtype=np.int64),
                   np.zeros(len(index), dtype=np.int64), batch_size, 0, notes)


def whole_pool_pairs(task: RetrievalTask, rank_cutoff: int) -> PairSet:
    """Every query against every candidate."""
    n, pool = len(task), len(task.candidates)
    starts = np.arange(n + 1, dtype=np.int64) * pool
    notes = f"reciprocal rank 0 beyond rank {rank_cutoff}" if rank_cutoff > 0 else ""
    return PairSet("whole_pool", np.arange(n, dtype=np.int64), starts, np.tile(np.arange(pool, dtype=np.int64), n),
                   starts[:-1] + np.asarray(task.gold, dtype=np.int64), np.zeros(n, dtype=np.int64), pool,
                   rank_cutoff, notes)


def rerank_pairs(task: RetrievalTask, query_emb: torch.Tensor, cand_emb: torch.Tensor, k: int,
                 rank_cutoff: int, retriever: str, block_rows: int = 1024) -> PairSet:
    """The first stage's top k of the whole pool for every query (ties by candidate order), to be re-scored."""
    n, pool = len(task), len(task.candidates)
    if k > pool:
        raise UserError(f"eval.rerank_k={k} is larger than the pool of {pool} candidates: give eval.rerank_k <= {pool}")
    gold = np.asarray(task.gold, dtype=np.int64)
    first = whole_pool(query_emb, cand_emb, gold, rank_cutoff=rank_cutoff, chunk_size=block_rows)
    top = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, block_rows):
        with full_float32():   # the products whole_pool ranks the gold by: its rank and the top k agree
            scores = (query_emb[start:start + block_rows] @ cand_emb.T).cpu().numpy()
        # Descending score, ties by candidate index: the same top k on every run.
        top[start:start + block_rows] = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hit = top == gold[:, None]
    gold_pair = np.where(hit.any(axis=1), np.arange(n) * k + hit.argmax(axis=1), -1)
    notes = (f"the top {k} of {retriever} (whole pool, {pool} candidates) re-scored; a gold outside them keeps its "
             f"first-stage rank" + (f"; reciprocal rank 0 beyond rank {rank_cutoff}" if rank_cutoff > 0 else ""))
    return PairSet("rerank", np.arange(n, dtype=np.int64), np.arange(n + 1, dtype=np.int64) * k, top.reshape(-1),
                   gold_pair.astype(np.int64), first.ranks.astype(np.int64), pool, rank_cutoff, notes, first)


def pair_set(task: RetrievalTask, evaluation: EvalConfig, protocol: str | None = None,
             retriever: Encoder | None = None, model: ModelConfig | None = None, cache_dir: Path | None = None,
             progress: bool = True) -> PairSet:
    """The pairs `protocol` (by default `eval.protocol`) scores; rerank encodes the task with the `retriever` first
    (its embeddings kept in `cache_dir` as any bi-encoder's)."""
    protocol = str(protocol or evaluation.protocol)
    if protocol == "csn":
        return csn_pairs(task, evaluation.csn_batch_size)
    if protocol == "whole_pool":
        return whole_pool_pairs(task, evaluation.rank_cutoff)
    if protocol != "rerank":
        raise UserError(f"unknown protocol {protocol!r}")
    if retriever is None:
        raise UserError("eval.protocol=rerank re-scores a first-stage bi-encoder's top k: name it with eval.retriever "
                        "(e.g. eval.retriever=builtin, or a fine-tuned bi-encoder's model folder)")
    embeddings = task_embeddings(retriever, task, model, cache_dir, progress)
    return rerank_pairs(task, embeddings.queries, embeddings.candidates, evaluation.rerank_k, evaluation.rank_cutoff,
                        retriever.info.name)


def check_cross_protocol(encoder: Encoder, evaluation: EvalConfig) -> None:
    """Protocols by model kind: a bi-encoder ranks embeddings (whole_pool, csn); rerank needs a cross-encoder and a
    retriever. Said before any work."""
    protocol = str(evaluation.protocol)
    if not isinstance(encoder, CrossEncoder):
        if protocol == "rerank":
            raise UserError(f"eval.protocol=rerank re-scores candidates with a cross-encoder, but {encoder.info.name} "
                            f"is a bi-encoder: use whole_pool or csn, or give a cross-encoder's folder as model.name")
        return
    if protocol == "rerank" and not evaluation.retriever:
        raise UserError("eval.protocol=rerank re-scores a first-stage bi-encoder's top k: name it with eval.retriever "
                        "(e.g. eval.retriever=builtin, or a fine-tuned bi-encoder's model folder)")


def pair_signature(encoder: Encoder, task: RetrievalTask, pairs: PairSet, model: ModelConfig,
                   precision: str | None = None) -> dict:
    """Everything that decides the pairs' scores, to the last bit."""
    return {"task": task.fingerprint(), "pairs": pairs.fingerprint(), "model": encoder.info.name,
            "revision": encoder.info.revision, "recipe": encoder.info.recipe, "max_pair_length": model.max_pair_length,
            "max_query_length": model.max_query_length, "batch_size": model.batch_size, "device": str(encoder.device),
            "precision": precision or encoder.precision}


def pair_cache_path(encoder: Encoder, task: RetrievalTask, pairs: PairSet, model: ModelConfig, cache_dir: Path,
                    precision: str | None = None) -> Path:
    return Path(cache_dir) / "baseline" / f"pairs-{content_hash(pair_signature(encoder, task, pairs, model, precision))}.pt"


def task_pair_inputs(encoder: CrossEncoder, task: RetrievalTask, pairs: PairSet, model: ModelConfig) -> PairInputs:
    """The pair set's pairs, tokenized once per text, in length-sorted batches."""
    return pair_inputs(encoder, task.queries, task.candidates, pairs.pairs(), model.max_pair_length,
                       model.max_query_length, model.batch_size)


def pair_scores(encoder: CrossEncoder, task: RetrievalTask, pairs: PairSet, model: ModelConfig,
                inputs: PairInputs | None = None, cache_dir: Path | None = None, progress: bool = True) -> torch.Tensor:
    """The pairs' unmasked float32 scores [n_pairs] on the CPU, kept in `cache_dir/baseline/` part by part as they are
    scored (an interrupted run scores again only the part it was in)."""
    signature = json.dumps(pair_signature(encoder, task, pairs, model), sort_keys=True)
    path = pair_cache_path(encoder, task, pairs, model, cache_dir) if cache_dir is not None else None
    inputs = inputs if inputs is not None else task_pair_inputs(encoder, task, pairs, model)
    return kept_outputs(encoder, lambda: inputs.batches, inputs.n, path, signature, progress,
                        f"scoring {inputs.n} pairs").reshape(-1)
