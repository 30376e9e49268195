"""What every run of a study shares, computed once and kept in `<study>/baseline/`: the unmasked embeddings
of its queries and pool, and every head's gradient score. A sweep's runs (one head each) load them instead
of recomputing. Each file is keyed by a hash of everything that decides it, and checked on load."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from ablation.engine import masked_embeddings
from ablation.gradient import gradient_scores
from codesearch.files import atomic_write_text
from codesearch.records import RetrievalTask
from heads.encoder import Encoder
from heads.retrieval import Embeddings, RetrievalSettings

from .runs import study_dir


def baseline_signature(encoder: Encoder, task: RetrievalTask, settings: RetrievalSettings) -> dict:
    return {"task": task.fingerprint(), "model": encoder.info.name, "revision": encoder.info.revision,
            "recipe": encoder.info.recipe, "max_query_length": settings.max_query_length,
            "max_code_length": settings.max_code_length, "batch_size": settings.batch_size,
            "device": str(encoder.device)}


def _key(signature: dict) -> str:
    return hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:16]


def _save_tensor_file(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def baseline_embeddings(cfg: DictConfig, encoder: Encoder, task: RetrievalTask,
                        settings: RetrievalSettings) -> Embeddings:
    """The study's unmasked embeddings, on the same length-sorted batches every ablation uses."""
    signature = baseline_signature(encoder, task, settings)
    path = study_dir(cfg) / "baseline" / f"embeddings-{_key(signature)}.pt"
    if path.is_file():
        stored = torch.load(path, weights_only=True)
        if stored.get("signature") == json.dumps(signature, sort_keys=True):
            return Embeddings(stored["queries"], stored["candidates"])
    queries = masked_embeddings(encoder, task.queries, settings.max_query_length, settings.batch_size,
                                progress=cfg.progress, desc="encoding queries")
    candidates = masked_embeddings(encoder, task.candidates, settings.max_code_length, settings.batch_size,
                                   progress=cfg.progress, desc="encoding code")
    _save_tensor_file(path, {"signature": json.dumps(signature, sort_keys=True), "queries": queries,
                             "candidates": candidates})
    return Embeddings(queries, candidates)


def study_gradient_scores(cfg: DictConfig, encoder: Encoder, task: RetrievalTask, settings: RetrievalSettings,
                          baseline: Embeddings, temperature: float, side: str) -> np.ndarray:
    """Every head's grad_score for the study, computed once per temperature and side."""
    signature = {**baseline_signature(encoder, task, settings), "temperature": temperature, "side": side}
    path = study_dir(cfg) / "baseline" / f"gradient-{_key(signature)}.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        # Compared as JSON: a tuple in the signature reads back as a list.
        if json.dumps(stored.get("signature"), sort_keys=True) == json.dumps(signature, sort_keys=True):
            return np.asarray(stored["scores"], dtype=np.float64)
    scores = gradient_scores(encoder, task.queries, task.candidates, np.asarray(task.gold), baseline.queries,
                             baseline.candidates, settings.max_query_length, settings.max_code_length,
                             settings.batch_size, temperature=temperature, side=side, progress=cfg.progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"signature": signature, "scores": scores.tolist()}) + "\n")
    return scores
