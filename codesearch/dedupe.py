"""Near-duplicate removal, as CodeSearchNet did before release: of functions whose token sets overlap by a
Jaccard similarity of at least the threshold, only the first is kept."""
from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer


def near_duplicate_keep_mask(token_lists: list[list[str]], threshold: float = 0.8,
                             chunk_size: int = 1024, order: list[int] | None = None) -> np.ndarray:
    """Boolean mask over `token_lists`: False for each item that is a near-duplicate of an earlier kept one.

    "Earlier" is in `order` (the items' indices, most preferred first) when given, else as listed.
    Similarity is the Jaccard index of the two token *sets* (identifiers, keywords, literals; punctuation
    is ignored). Exact pairwise, computed in chunks of sparse products, so it scales to tens of thousands.
    """
    if order is not None:
        if sorted(order) != list(range(len(token_lists))):
            raise ValueError("order must list every item's index once")
        keep = np.ones(len(token_lists), dtype=bool)
        keep[np.asarray(order, dtype=int)] = near_duplicate_keep_mask(
            [token_lists[i] for i in order], threshold, chunk_size)
        return keep
    n = len(token_lists)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    words = [[t for t in tokens if any(ch.isalnum() for ch in t)] for tokens in token_lists]
    vectorizer = CountVectorizer(analyzer=lambda tokens: tokens, binary=True, lowercase=False)
    try:
        X = vectorizer.fit_transform(words).astype(np.float32).tocsr()
    except ValueError:  # no item has any word token
        return keep
    sizes = np.asarray(X.sum(axis=1)).ravel()
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        # Only earlier items can make a later one a duplicate.
        inter = (X[start:stop] @ X[:stop].T).toarray()
        union = sizes[start:stop, None] + sizes[None, :stop] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            jaccard = np.where(union > 0, inter / union, 0.0)
        for row in range(stop - start):
            i = start + row
            if sizes[i] == 0:
                continue
            earlier = jaccard[row, :i] >= threshold
            if np.any(earlier & keep[:i]):
                keep[i] = False
    return keep
