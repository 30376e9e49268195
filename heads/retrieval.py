"""Retrieval with an encoder: a task's embeddings (kept in the study's folder,
so that every run of a study shares one baseline), and ranking them under each protocol."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from codesearch.files import atomic_write
from codesearch.hashing import content_hash
from codesearch.metrics import PROTOCOLS, ProtocolResult, evaluate_protocol
from codesearch.records import RetrievalTask

from .encoder import Encoder
from .settings import EvalConfig, ModelConfig


@dataclass
class Embeddings:
    queries: torch.Tensor     # [n_queries, dim]
    candidates: torch.Tensor  # [n_candidates, dim]


def rank(protocol: str, queries: torch.Tensor, candidates: torch.Tensor, task: RetrievalTask,
         settings: EvalConfig) -> ProtocolResult:
    """Per-query ranks of the task's gold candidates under one protocol."""
    return evaluate_protocol(str(protocol), queries, candidates, np.asarray(task.gold),
                             rank_cutoff=settings.rank_cutoff,
                             csn_batch_size=settings.csn_batch_size)


def rank_task(embeddings: Embeddings, task: RetrievalTask, settings: EvalConfig) -> dict[str, ProtocolResult]:
    """Per-query ranks under every protocol, the primary (`settings.protocol`) first."""
    protocols = (settings.protocol, *[p for p in PROTOCOLS if p != settings.protocol])
    return {str(p): rank(p, embeddings.queries, embeddings.candidates, task, settings) for p in protocols}


def embedding_signature(encoder: Encoder, task: RetrievalTask, model: ModelConfig) -> dict:
    """Everything that decides a task's embeddings, to the last bit."""
    return {"task": task.fingerprint(), "model": encoder.info.name, "revision": encoder.info.revision,
            "recipe": encoder.info.recipe, "max_query_length": model.max_query_length,
            "max_code_length": model.max_code_length, "batch_size": model.batch_size,
            "device": str(encoder.device)}


def task_embeddings(encoder: Encoder, task: RetrievalTask, model: ModelConfig, cache_dir: Path | None = None,
                    progress: bool = True) -> Embeddings:
    """The task's unmasked embeddings, on the length-sorted batches every ablation uses; kept in
    `cache_dir/baseline/` (keyed by `embedding_signature`, checked on load) when a folder is given."""
    signature = embedding_signature(encoder, task, model)
    path = Path(cache_dir) / "baseline" / f"embeddings-{content_hash(signature)}.pt" if cache_dir else None
    if path is not None and path.is_file():
        stored = torch.load(path, weights_only=True)
        if stored.get("signature") == json.dumps(signature, sort_keys=True):
            return Embeddings(stored["queries"], stored["candidates"])
    queries = encoder.encode(task.queries, model.max_query_length, model.batch_size, progress=progress,
                             desc="encoding queries")
    candidates = encoder.encode(task.candidates, model.max_code_length, model.batch_size, progress=progress,
                                desc="encoding code")
    if path is not None:
        payload = {"signature": json.dumps(signature, sort_keys=True), "queries": queries, "candidates": candidates}
        atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return Embeddings(queries, candidates)
