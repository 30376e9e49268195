"""Retrieval settings, and ranking a task's embedded queries and candidates under each protocol."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from codesearch.metrics import PROTOCOLS, ProtocolResult, evaluate_protocol
from codesearch.records import RetrievalTask


@dataclass(frozen=True)
class RetrievalSettings:
    max_query_length: int = 128
    max_code_length: int = 256
    batch_size: int = 32
    protocol: str = "whole_pool"   # the primary protocol: per-query ranks and paired statistics use it
    rank_cutoff: int = 1000
    csn_batch_size: int = 1000


@dataclass
class Embeddings:
    queries: torch.Tensor     # [n_queries, dim]
    candidates: torch.Tensor  # [n_candidates, dim]


def rank_task(embeddings: Embeddings, task: RetrievalTask, settings: RetrievalSettings,
              protocols: tuple[str, ...] | None = None) -> dict[str, ProtocolResult]:
    """Per-query ranks under each protocol (by default all, the primary first)."""
    if protocols is None:
        protocols = (settings.protocol, *[p for p in PROTOCOLS if p != settings.protocol])
    gold = np.asarray(task.gold)
    return {p: evaluate_protocol(p, embeddings.queries, embeddings.candidates, gold,
                                 rank_cutoff=settings.rank_cutoff, csn_batch_size=settings.csn_batch_size)
            for p in protocols}
