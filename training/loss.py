"""The contrastive loss with in-batch negatives (GraphCodeBERT's and UniXcoder's code-search objective)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def in_batch_loss(queries: torch.Tensor, codes: torch.Tensor, code_keys: torch.Tensor, scale: float = 1.0,
                  symmetric: bool = False) -> torch.Tensor:
    """Cross-entropy over the batch's query × code scores, each query's own code the target.

    queries, codes: [batch, dim], row i of each a pair. code_keys: [batch], equal for identical code texts: a code
    that is also another pair's code is no negative of it, so it is left out of the softmax denominator (a query
    would otherwise be pushed away from its own gold). scale: 1/temperature for normalised embeddings, 1 for dot
    products. symmetric: the mean with the code-to-query loss (the same mask serves, being symmetric).
    """
    scores = scale * (queries.float() @ codes.float().T)                       # [batch, batch], float32 under autocast
    duplicates = code_keys[:, None] == code_keys[None, :]
    duplicates.fill_diagonal_(False)                                           # the gold itself stays
    scores = scores.masked_fill(duplicates, float("-inf"))
    target = torch.arange(len(scores), device=scores.device)
    loss = F.cross_entropy(scores, target)
    if symmetric:
        loss = (loss + F.cross_entropy(scores.T, target)) / 2
    return loss
