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

import sys

import numpy as np
import torch
from tqdm import tqdm

from heads.encoder import Encoder
from heads.hooks import GradientMask, hook_z


def retrieval_loss(query_emb: torch.Tensor, cand_emb: torch.Tensor, gold: np.ndarray,
                   temperature: float) -> torch.Tensor:
    """Mean over queries of the cross-entropy of the gold candidate among the whole pool."""
    scores = query_emb @ cand_emb.T / temperature
    return torch.nn.functional.cross_entropy(scores, torch.as_tensor(np.asarray(gold), dtype=torch.long))


def _backprop_side(encoder: Encoder, texts: list[str], max_length: int, batch_size: int,
                   grad_of_embeddings: torch.Tensor, mask: torch.Tensor, progress: bool, desc: str) -> None:
    token_ids = encoder.tokenize(texts, max_length)
    batches = list(encoder.length_sorted_batches(token_ids, batch_size))
    with hook_z(encoder.model, GradientMask(mask)):
        for positions, ids, attention_mask in tqdm(batches, desc=desc, unit="batch", disable=not progress,
                                                   file=sys.stderr, mininterval=1.0):
            hidden = encoder.model(input_ids=ids, attention_mask=attention_mask).last_hidden_state
            embeddings = encoder.pool(hidden, attention_mask).float()
            upstream = grad_of_embeddings[torch.as_tensor(positions)].to(embeddings.device)
            (embeddings * upstream).sum().backward()


def gradient_scores(encoder: Encoder, queries: list[str], candidates: list[str], gold: np.ndarray,
                    query_emb: torch.Tensor, cand_emb: torch.Tensor, max_query_length: int, max_code_length: int,
                    batch_size: int, temperature: float = 0.05, side: str = "both",
                    progress: bool = True) -> np.ndarray:
    """[layers, heads] first-order estimate of the loss increase when each head is masked (zero mode).

    `query_emb` and `cand_emb` are the unmasked embeddings of the same texts (the baseline).
    """
    q = query_emb.detach().clone().requires_grad_(True)
    c = cand_emb.detach().clone().requires_grad_(True)
    loss = retrieval_loss(q, c, gold, temperature)
    loss.backward()
    mask = torch.ones(encoder.n_layers, encoder.n_heads, requires_grad=True, device=encoder.device)
    frozen = [p for p in encoder.model.parameters() if p.requires_grad]
    for parameter in frozen:  # only the mask's gradient is wanted
        parameter.requires_grad_(False)
    try:
        with torch.enable_grad():
            if side in ("query", "both"):
                _backprop_side(encoder, queries, max_query_length, batch_size, q.grad, mask, progress,
                               "head gradients (queries)")
            if side in ("code", "both"):
                _backprop_side(encoder, candidates, max_code_length, batch_size, c.grad, mask, progress,
                               "head gradients (code)")
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)
    return (-mask.grad).detach().cpu().numpy().astype(np.float64)
