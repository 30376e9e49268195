"""Retrieval with an encoder: a task's embeddings (kept in the study's folder,
so that every run of a study shares one baseline), and ranking them under each protocol."""
from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from codesearch.files import atomic_write
from codesearch.hashing import content_hash
from codesearch.metrics import PROTOCOLS, ProtocolResult, evaluate_protocol
from codesearch.records import RetrievalTask

from .encoder import Batch, Encoder
from .settings import EvalConfig, ModelConfig


@dataclass
class Embeddings:
    queries: torch.Tensor     # [n_queries, dim]
    candidates: torch.Tensor  # [n_candidates, dim]


def rank(protocol: str, queries: torch.Tensor, candidates: torch.Tensor, task: RetrievalTask,
         settings: EvalConfig, block_rows: int = 1024) -> ProtocolResult:
    """Per-query ranks of the task's gold candidates under one protocol (scored on the embeddings' device, at most
    `block_rows` queries at once)."""
    return evaluate_protocol(str(protocol), queries, candidates, np.asarray(task.gold),
                             rank_cutoff=settings.rank_cutoff,
                             csn_batch_size=settings.csn_batch_size, block_rows=block_rows)


def rank_task(embeddings: Embeddings, task: RetrievalTask, settings: EvalConfig) -> dict[str, ProtocolResult]:
    """Per-query ranks under every protocol, the primary (`settings.protocol`) first."""
    protocols = (settings.protocol, *[p for p in PROTOCOLS if p != settings.protocol])
    return {str(p): rank(p, embeddings.queries, embeddings.candidates, task, settings) for p in protocols}


def embedding_signature(encoder: Encoder, task: RetrievalTask, model: ModelConfig,
                        precision: str | None = None) -> dict:
    """Everything that decides a task's embeddings, to the last bit (in `precision`, by default the encoder's)."""
    return {"task": task.fingerprint(), "model": encoder.info.name, "revision": encoder.info.revision,
            "recipe": encoder.info.recipe, "max_query_length": model.max_query_length,
            "max_code_length": model.max_code_length, "batch_size": model.batch_size,
            "device": str(encoder.device), "precision": precision or encoder.precision}


def _cache_paths(encoder: Encoder, task: RetrievalTask, model: ModelConfig, cache_dir: Path,
                 precision: str | None = None) -> dict[str, Path]:
    key = content_hash(embedding_signature(encoder, task, model, precision))
    return {side: Path(cache_dir) / "baseline" / f"{side}-{key}.pt" for side in ("queries", "candidates")}


def baseline_cached(encoder: Encoder, task: RetrievalTask, model: ModelConfig, cache_dir: Path | None,
                    precision: str | None = None) -> bool:
    """Whether both sides' embeddings (in `precision`, by default the encoder's) are kept in `cache_dir` (a run
    then does not encode them)."""
    return cache_dir is not None and all(
        p.is_file() for p in _cache_paths(encoder, task, model, cache_dir, precision).values())


PART_BATCHES = 64   # batches per part of a side kept while it is encoded: an interruption loses at most one part


def task_embeddings(encoder: Encoder, task: RetrievalTask, model: ModelConfig, cache_dir: Path | None = None,
                    progress: bool = True) -> Embeddings:
    """The task's unmasked float32 embeddings on the CPU, on the length-sorted batches every ablation uses; each side
    kept in `cache_dir/baseline/` (keyed by `embedding_signature`, checked on load), and while a side is encoded each
    part of it as soon as it is done, so an interrupted run encodes again only the part it was in."""
    signature = json.dumps(embedding_signature(encoder, task, model), sort_keys=True)
    paths = _cache_paths(encoder, task, model, cache_dir) if cache_dir else {}
    sides = {}
    for side, texts, length in (("queries", task.queries, model.max_query_length),
                                ("candidates", task.candidates, model.max_code_length)):
        sides[side] = kept_outputs(
            encoder, lambda t=texts, n=length: list(encoder.length_sorted_batches(encoder.tokenize(t, n),
                                                                                 model.batch_size)),
            len(texts), paths.get(side), signature, progress, f"encoding {'queries' if side == 'queries' else 'code'}")
    return Embeddings(sides["queries"], sides["candidates"])


def kept_outputs(encoder: Encoder, make_batches: Callable[[], Sequence[Batch]], n: int, path: Path | None,
                 signature: str, progress: bool, desc: str) -> torch.Tensor:
    """What the encode loop yields for `n` inputs ([n, encoder.output_dim] float32 on the CPU: embeddings, or a
    cross-encoder's scores): read from `path` when it holds them under `signature`, else computed on the batches
    `make_batches()` gives, part by part, and kept there."""
    stored = _load(path, signature)
    if stored is not None:
        return stored
    out = encode_in_parts(encoder, make_batches(), n, path, signature, progress, desc)
    if path is not None:
        payload = {"signature": signature, "embeddings": out}
        atomic_write(path, lambda tmp: torch.save(payload, tmp))
        shutil.rmtree(path.with_suffix(".parts"), ignore_errors=True)
    return out


def _load(path: Path | None, signature: str) -> torch.Tensor | None:
    if path is None or not path.is_file():
        return None
    stored = torch.load(path, weights_only=True)
    return stored["embeddings"] if stored.get("signature") == signature else None


def encode_in_parts(encoder: Encoder, batches: Sequence[Batch], n: int, path: Path | None, signature: str,
                    progress: bool, desc: str) -> torch.Tensor:
    """[n, output_dim] over the given batches, `PART_BATCHES` batches at a time; with a `path`, each part is kept
    beside it (`<path>.parts/`) and a part kept by an interrupted run is loaded instead of encoded. The batches are
    the whole side's, so the result is bit-identical to one pass over them."""
    out = torch.empty((n, encoder.output_dim), dtype=torch.float32)
    bar = tqdm(total=len(batches), desc=desc, unit="batch", disable=not progress, file=sys.stderr, mininterval=1.0)
    with bar:
        for number, start in enumerate(range(0, len(batches), PART_BATCHES)):
            part = batches[start:start + PART_BATCHES]
            part_path = path.with_suffix(".parts") / f"{number}.pt" if path is not None else None
            kept = _load(part_path, signature)
            if isinstance(kept, dict):
                out[kept["rows"]] = kept["values"]
                bar.update(len(part))
                continue
            rows = []
            for batch, pooled in encoder.forward_batches(None, 0, batches=part):
                out[torch.as_tensor(batch.positions)] = pooled.float().cpu()
                rows += batch.positions
                bar.update(1)
            if part_path is not None:
                rows_t = torch.as_tensor(rows, dtype=torch.long)
                payload = {"signature": signature, "embeddings": {"rows": rows_t, "values": out[rows_t].clone()}}
                atomic_write(part_path, lambda tmp: torch.save(payload, tmp))
    return out
