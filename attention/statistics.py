"""Per head and example, where the head's attention goes: vectorised over the heads of one layer, on one example's
real tokens (each example is cut to its own length, so no padding row or column is ever read).

A is the head's attention over the example's real tokens (rows renormalised to sum to 1); Q, C and S are the query,
code and special tokens, R all real tokens.

| statistic | definition |
| --- | --- |
| `q2c_mass` | mean over rows r in Q of the sum over c in C of A[r, c]; likewise `c2q_mass`, `q2q_mass`, `c2c_mass` |
| `q2c_max` | max of A over Q x C (the original study's "query_to_code") |
| `entropy` | mean over rows r in R of -sum_c A[r, c] ln A[r, c] (nats; Clark et al. 2019) |
| `sparsity` | share of the R x R entries below 0.01 |
| `cls_mass` | mean over rows in R of A[r, first token] |
| `sep_mass` | mean over rows in R of the sum of A[r, s] over the separator tokens s |
| `q2c_value_mass` | `q2c_mass` of A[r, c] * |f(v_c)| renormalised per row: each key weighted by the norm of its |
|   | value vector after the head's share of the output projection (Kobayashi et al. 2020: weight alone |
|   | overstates the attention to special tokens) |

A statistic with no rows or columns to take (`q2c_mass` of a code-only input) is NaN. Construct attention: the
mass from the query rows (pairs) or from every code row (code alone) to the code tokens of each category or
construct, with the category's share of the code tokens beside it (what uniform attention would give).

The attention is read a few times only, whatever the number of statistics: every mass is one product of the
attention with a [tokens, groups] table of column indicators (the row sums among them, so that renormalising costs
nothing: H(a/s) = H(a)/s + ln s), then one pass each for the entropy and the sparsity. The logarithms of the
entropy are taken in the model's float32 (the costliest step; its sums of at most a few hundred terms stay within
1e-6 of float64); everything else is float64. Walking a batch one example at a time, each cut to its own length,
reads less than the padded batch and keeps each example's attention in cache: about twice as fast, measured, as
the padded batch at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .settings import CONSTRUCTS, STATISTICS

SPARSE_BELOW = 0.01
F64 = torch.float64


@dataclass
class ExampleTokens:
    """What an example's statistics need besides its attention: [L] masks over its real tokens, [L, K] construct
    flags (each code token's syntax category and constructs)."""
    query: torch.Tensor         # bool
    code: torch.Tensor          # bool
    separators: torch.Tensor    # bool
    constructs: torch.Tensor    # bool [L, K]

    def columns(self) -> torch.Tensor:
        """[L, 4 + K] float64: all, query, code, separators, then the code tokens of each construct."""
        every = torch.ones_like(self.query)
        return torch.cat([torch.stack([every, self.query, self.code, self.separators], -1),
                          self.constructs & self.code[:, None]], -1).to(torch.float64)


def _row_mean(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """[H, ...] mean of per-row values [H, L, ...] over the `rows` [L]; NaN without rows."""
    if not rows.any():
        return torch.full((values.shape[0], *values.shape[2:]), torch.nan, dtype=F64)
    return values[:, rows].mean(1)


def example_statistics(a: torch.Tensor, tokens: ExampleTokens, value_norms: torch.Tensor | None,
                       source: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every statistic of one example and layer, and its construct attention.

    `a` [H, L, L]: the layer's attention over the example's L real tokens; `value_norms` [H, L]: the norm of each
    token's value vector through the head's share of the output projection (None: `q2c_value_mass` is NaN);
    `source` [L]: the rows the construct attention is taken from (None: none taken).
    Returns [len(STATISTICS), H] and [H, len(CONSTRUCTS)] (or None), in float64.
    """
    a = a.to(torch.float32)
    length = a.shape[-1]
    exact = a.to(F64)
    per_row = exact @ tokens.columns()                                             # [H, L, 4 + K]
    total = per_row[..., 0].clamp(min=torch.finfo(F64).tiny)                      # each row's sum
    share = per_row / total[..., None]
    to_query, to_code, to_separators = share[..., 1], share[..., 2], share[..., 3]
    query, code = tokens.query, tokens.code
    every = torch.ones(length, dtype=torch.bool)
    out = {"q2c_mass": _row_mean(to_code, query), "c2q_mass": _row_mean(to_query, code),
           "q2q_mass": _row_mean(to_query, query), "c2c_mass": _row_mean(to_code, code)}
    if query.any() and code.any():
        block = exact[:, query][:, :, code] / total[:, query, None]
        out["q2c_max"] = block.flatten(1).amax(1)
    else:
        out["q2c_max"] = torch.full((a.shape[0],), torch.nan, dtype=F64)
    plogp = (a * torch.log(a.clamp(min=torch.finfo(torch.float32).tiny))).sum(-1).to(F64)
    out["entropy"] = _row_mean(-plogp / total + torch.log(total), every)
    below = (exact < SPARSE_BELOW * total[..., None]).sum(-1).to(F64)   # float32 would flip entries near 0.01
    out["sparsity"] = _row_mean(below, every) / length
    out["cls_mass"] = _row_mean(exact[..., 0] / total, every)
    out["sep_mass"] = _row_mean(to_separators, every)
    if value_norms is None:
        out["q2c_value_mass"] = torch.full_like(out["q2c_mass"], torch.nan)
    else:   # A[r, c] |f(v_c)|, renormalised per row: two products with the norms as column weights
        norms = value_norms.to(F64)                                                # [H, L]
        weighted = exact @ torch.stack([norms, norms * code], -1)                  # [H, L, 2]
        out["q2c_value_mass"] = _row_mean(weighted[..., 1] / weighted[..., 0].clamp(min=1e-300), query)
    statistics = torch.stack([out[name] for name in STATISTICS])
    constructs = None if source is None else _row_mean(share[..., 4:], source)   # [H, K]
    return statistics, constructs


def construct_share(tokens: ExampleTokens) -> torch.Tensor:
    """[K]: each construct's share of the example's code tokens; NaN without code tokens."""
    if not tokens.code.any():
        return torch.full((len(CONSTRUCTS),), torch.nan, dtype=F64)
    return tokens.constructs[tokens.code].to(F64).mean(0)


def js_distances(attention: torch.Tensor, real: torch.Tensor, rows: int = 0, seed: int = 0) -> torch.Tensor:
    """[N, N] mean over the real rows of the Jensen-Shannon distance (natural log, as scipy's `jensenshannon`)
    between every two heads' attention distributions, for one example; `attention` is [N, S, S], every head of the
    model over that example's tokens. With `rows`, over that many of its rows (a seeded sample): the cost is
    heads^2 x rows x tokens."""
    a = attention[:, real][:, :, real].to(torch.float64)
    a = a / a.sum(-1, keepdim=True)
    if 0 < rows < a.shape[1]:
        a = a[:, torch.randperm(a.shape[1], generator=torch.Generator().manual_seed(seed))[:rows].sort().values]
    entropy = -torch.special.xlogy(a, a).sum(-1)                                    # [N, R]
    out = torch.zeros(a.shape[0], a.shape[0], dtype=torch.float64)
    for i in range(a.shape[0] - 1):   # one head against every later one: the matrix is symmetric
        m = (a[i] + a[i + 1:]) / 2                                                  # [N - i - 1, R, S]
        divergence = -torch.special.xlogy(m, m).sum(-1) - (entropy[i] + entropy[i + 1:]) / 2
        out[i, i + 1:] = divergence.clamp(min=0).sqrt().mean(-1)
    return out + out.T
