"""Two per-head maps compared as wholes, with no pairing of queries: rank correlations, the overlap of the heads
that matter, and side-by-side tables of any per-head value (ΔMRR, probe selectivity, attention statistics).

Correlations are over the heads both maps have (NaN dropped). Permutation p-values shuffle which head of one map
meets which head of the other (`scipy.stats.permutation_test`, `permutation_type="pairings"`, two-sided), with a
generator seeded by the study seed and the test's name, so the same comparison always gives the same p.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ablation.stats import condition_rng
from heads.naming import parse_head_name

NAN = float("nan")


def _spearman(x, y):
    return stats.spearmanr(x, y).statistic


def _kendall(x, y):
    return stats.kendalltau(x, y).statistic


def correlation(x: np.ndarray, y: np.ndarray, evidence: str, n_permutations: int = 0, seed: int = 0) -> dict:
    """Spearman's rho and Kendall's tau-b of two maps over the same heads, with scipy's p-values; with
    n_permutations, also their permutation p-values. NaN where fewer than 3 heads or a constant map make them
    undefined."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    both = np.isfinite(x) & np.isfinite(y)
    x, y = x[both], y[both]
    out = {"evidence": evidence, "n_heads": int(len(x)), "spearman_rho": NAN, "spearman_p": NAN,
           "spearman_p_perm": NAN, "kendall_tau": NAN, "kendall_p": NAN, "kendall_p_perm": NAN}
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    spearman, kendall = stats.spearmanr(x, y), stats.kendalltau(x, y)
    out.update(spearman_rho=float(spearman.statistic), spearman_p=float(spearman.pvalue),
               kendall_tau=float(kendall.statistic), kendall_p=float(kendall.pvalue))
    if n_permutations:
        for name, statistic in (("spearman", _spearman), ("kendall", _kendall)):
            test = stats.permutation_test((x, y), statistic, permutation_type="pairings", vectorized=False,
                                          n_resamples=n_permutations, alternative="two-sided",
                                          rng=condition_rng(seed, f"{name}:{evidence}"))
            out[f"{name}_p_perm"] = float(test.pvalue)
    return out


def expected_jaccard(n: int, size_a: int, size_b: int) -> float:
    """The mean Jaccard index of two random sets of these sizes drawn from n heads: the intersection K is
    hypergeometric, J = K / (size_a + size_b − K)."""
    if size_a + size_b == 0:
        return NAN
    k = np.arange(max(0, size_a + size_b - n), min(size_a, size_b) + 1)
    return float(np.sum(stats.hypergeom.pmf(k, n, size_a, size_b) * k / (size_a + size_b - k)))


def overlap(name: str, heads_a: list[str], heads_b: list[str], n: int) -> dict:
    """How much two sets of heads out of the same n coincide: the Jaccard index, its chance level for random sets
    of the same sizes, and the hypergeometric p of an intersection at least this large."""
    a, b = set(heads_a), set(heads_b)
    both = a & b
    union = len(a | b)
    return {"heads": name, "n_heads": n, "n_a": len(a), "n_b": len(b), "n_both": len(both),
            "jaccard": len(both) / union if union else NAN, "chance_jaccard": expected_jaccard(n, len(a), len(b)),
            "p_overlap": float(stats.hypergeom.sf(len(both) - 1, n, len(a), len(b))) if a and b else NAN,
            "heads_both": " ".join(sorted(both, key=parse_head_name))}


def importance_rank(frame: pd.DataFrame, column: str) -> pd.Series:
    """1 for the head with the most negative value of `column` (ΔMRR: the most important), then on; ties in
    layer/head order, so the top k are always exactly k heads."""
    order = frame.sort_values([column, "layer", "head"], kind="stable").index
    return pd.Series(np.arange(1, len(frame) + 1), index=order).reindex(frame.index)


def side_by_side(a: pd.DataFrame, b: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """condition, layer, head, then each of `columns` for A and for B (`<column>_a`, `<column>_b`), over the heads
    both tables have, in layer/head order."""
    keys = ["condition", "layer", "head"]
    a, b = (table[keys + columns].astype({"layer": int, "head": int}) for table in (a, b))
    return a.merge(b, on=keys, suffixes=("_a", "_b")).sort_values(["layer", "head"], ignore_index=True)
