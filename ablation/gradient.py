"""A first-order importance estimate for every head from one backward pass (Michel et al., 2019).

A mask ξ = ones(layers, heads) multiplies each head's output at the hook point. The retrieval loss is the
in-pool contrastive loss: for each query, cross-entropy of its gold among all candidates, with scores
(embedding dot products) divided by a temperature. Masking a head moves ξ_h from 1 to 0, so to first order
the loss rises by -∂L/∂ξ_h: that is `grad_score` (positive where the head helps).

The gradient is exact for the whole pool without holding the whole pool's graph: embeddings are computed
without gradients, the loss's gradient with respect to each embedding is taken, then each batch is re-encoded
with gradients and backpropagated against its embeddings' gradients (the "gradient cache" trick).

Michel et al. average |∂L(x)/∂ξ_h| over examples; with a pool-wide loss, per-query gradients would need a
backward pass through the whole pool per query, so the expectation is taken inside: one loss, one gradient.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from codesearch.files import atomic_write_text
from codesearch.hashing import content_hash
from codesearch.records import RetrievalTask
from heads.encoder import Encoder
from heads.hooks import GradientMask, HeadMask
from heads.retrieval import Embeddings, embedding_signature
from heads.settings import ModelConfig


def retrieval_loss(query_emb: torch.Tensor, cand_emb: torch.Tensor, gold: np.ndarray,
                   temperature: float) -> torch.Tensor:
    """Mean over queries of the cross-entropy of the gold candidate among the whole pool."""
    scores = query_emb @ cand_emb.T / temperature
    return torch.nn.functional.cross_entropy(scores, torch.as_tensor(np.asarray(gold), dtype=torch.long,
                                                                     device=scores.device))


def loss_gradients(query_emb: torch.Tensor, cand_emb: torch.Tensor, gold: np.ndarray, temperature: float,
                   block_rows: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient of `retrieval_loss` with respect to every query and candidate embedding, taken `block_rows`
    queries at a time: each query's term of the mean needs only its own row of scores, so no [queries, candidates]
    matrix is held whole."""
    n = len(gold)
    candidates = cand_emb.detach().clone().requires_grad_(True)
    query_grad = torch.empty_like(query_emb)
    gold_t = torch.as_tensor(np.asarray(gold), dtype=torch.long, device=query_emb.device)
    for start in range(0, n, block_rows):
        rows = query_emb[start:start + block_rows].detach().clone().requires_grad_(True)
        scores = rows @ candidates.T / temperature
        loss = torch.nn.functional.cross_entropy(scores, gold_t[start:start + block_rows], reduction="sum") / n
        loss.backward()
        query_grad[start:start + block_rows] = rows.grad
    return query_grad, candidates.grad


def _hook(mask: torch.Tensor, pruned: HeadMask | None):
    """The gradient mask, behind the pruned heads' own mask when some are pruned already."""
    gradient_mask = GradientMask(mask)
    if pruned is None:
        return gradient_mask

    def hook(layer: int, z: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        replaced = pruned(layer, z, attention_mask)
        return gradient_mask(layer, z if replaced is None else replaced, attention_mask)
    return hook


def _backprop_side(encoder: Encoder, texts: list[str], max_length: int, batch_size: int,
                   grad_of_embeddings: torch.Tensor, mask: torch.Tensor, progress: bool, desc: str,
                   pruned: HeadMask | None = None) -> None:
    for batch, embeddings in encoder.forward_batches(encoder.tokenize(texts, max_length), batch_size,
                                                     hook=_hook(mask, pruned), grad=True, progress=progress,
                                                     desc=desc):
        upstream = grad_of_embeddings[torch.as_tensor(batch.positions, device=grad_of_embeddings.device)]
        upstream = upstream.to(embeddings.device)
        (embeddings.float() * upstream).sum().backward()


def gradient_scores(encoder: Encoder, queries: list[str], candidates: list[str], gold: np.ndarray,
                    baseline: Embeddings, model: ModelConfig, temperature: float = 0.05, side: str = "both",
                    progress: bool = True, block_rows: int = 1024,
                    pruned: dict[str, HeadMask] | None = None) -> np.ndarray:
    """[layers, heads] first-order estimate of the loss increase when each head is masked (zero mode).

    `baseline` holds the unmasked embeddings of the same texts; `model` gives the input lengths and batch size;
    the loss's scores are taken `block_rows` queries at a time. `pruned` ({side: mask}): heads masked already on
    that side (Michel et al.'s iterative pruning), `baseline` then holds the embeddings with them masked; their own
    scores come out 0 in zero mode.
    """
    pruned = pruned or {}
    query_grad, code_grad = loss_gradients(baseline.queries, baseline.candidates, gold, temperature, block_rows)
    mask = torch.ones(encoder.n_layers, encoder.n_heads, requires_grad=True, device=encoder.device)
    frozen = [p for p in encoder.model.parameters() if p.requires_grad]
    for parameter in frozen:  # only the mask's gradient is wanted
        parameter.requires_grad_(False)
    try:
        if side in ("query", "both"):
            _backprop_side(encoder, queries, model.max_query_length, model.batch_size, query_grad, mask, progress,
                           "head gradients (queries)", pruned.get("query"))
        if side in ("code", "both"):
            _backprop_side(encoder, candidates, model.max_code_length, model.batch_size, code_grad, mask, progress,
                           "head gradients (code)", pruned.get("code"))
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)
    return (-mask.grad).detach().cpu().numpy().astype(np.float64)


def _cache(encoder: Encoder, task: RetrievalTask, model: ModelConfig, temperature: float, side: str,
           cache_dir: Path, precision: str | None = None) -> tuple[dict, Path]:
    signature = {**embedding_signature(encoder, task, model, precision), "temperature": temperature,
                 "side": str(side)}
    return signature, Path(cache_dir) / "baseline" / f"gradient-{content_hash(signature)}.json"


def gradient_cached(encoder: Encoder, task: RetrievalTask, model: ModelConfig, temperature: float, side: str,
                    cache_dir: Path, precision: str | None = None) -> bool:
    """Whether the scores (in `precision`, by default the encoder's) are kept in `cache_dir`."""
    return _cache(encoder, task, model, temperature, side, cache_dir, precision)[1].is_file()


def study_gradient_scores(encoder: Encoder, task: RetrievalTask, baseline: Embeddings, model: ModelConfig,
                          temperature: float, side: str, cache_dir: Path, progress: bool = True,
                          block_rows: int = 1024) -> np.ndarray:
    """Every head's grad_score for the study, computed once per temperature and side and kept in
    `cache_dir/baseline/` (a sweep's runs and a resumed run reuse it)."""
    signature, path = _cache(encoder, task, model, temperature, side, cache_dir)
    if path.is_file():
        stored = json.loads(path.read_text())
        # Compared as JSON: a tuple in the signature reads back as a list.
        if json.dumps(stored.get("signature"), sort_keys=True) == json.dumps(signature, sort_keys=True):
            return np.asarray(stored["scores"], dtype=np.float64)
    scores = gradient_scores(encoder, task.queries, task.candidates, np.asarray(task.gold), baseline, model,
                             temperature=temperature, side=side, progress=progress, block_rows=block_rows)
    atomic_write_text(path, json.dumps({"signature": signature, "scores": scores.tolist()}) + "\n")
    return scores
