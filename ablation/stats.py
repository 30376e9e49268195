"""Paired statistics of an ablation against the baseline, on the same queries, and the multiple-comparison
correction over all conditions of a study.

Per-query reciprocal ranks are paired across conditions: the tests work on the differences
d_i = rr_ablated_i - rr_baseline_i. Wilcoxon's signed-rank test is not used: it discards zero differences,
which a head ablation produces for many queries.
"""
from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

# Reciprocal ranks lie in [0, 1]: paired differences that spread less than this are float noise, not variation.
SPREAD_TOLERANCE = 1e-12


@dataclass
class PairedComparison:
    """One condition against the baseline. delta_mrr < 0 where the ablated heads helped retrieval."""
    baseline_mrr: float
    ablated_mrr: float
    delta_mrr: float     # mean of d = ablated_mrr - baseline_mrr
    ci_low: float        # paired bootstrap percentile interval of delta_mrr
    ci_high: float
    t_stat: float        # paired t-test
    p_value: float
    p_perm: float        # paired sign-flip permutation test (two-sided)
    cohens_d: float      # mean(d) / sd(d): Cohen's d of the paired differences (d_z)
    n_queries: int

    def as_dict(self) -> dict:
        return asdict(self)


def condition_rng(seed: int, name: str) -> np.random.Generator:
    """A generator that depends on the study seed and the condition's name, not on the order conditions run:
    a resumed study resamples exactly as an uninterrupted one."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _mean_difference(x, y, axis=-1):
    return np.mean(x - y, axis=axis)


def compare_paired(baseline_rr: np.ndarray, ablated_rr: np.ndarray, rng: np.random.Generator,
                   n_bootstrap: int = 10000, n_permutations: int = 10000, confidence: float = 0.95) -> PairedComparison:
    baseline_rr = np.asarray(baseline_rr, dtype=np.float64)
    ablated_rr = np.asarray(ablated_rr, dtype=np.float64)
    if baseline_rr.shape != ablated_rr.shape or baseline_rr.ndim != 1:
        raise ValueError("baseline and ablated reciprocal ranks must be paired vectors of the same length")
    n = len(baseline_rr)
    d = ablated_rr - baseline_rr
    delta = float(d.mean()) if n else float("nan")
    if n < 2 or np.ptp(d) <= SPREAD_TOLERANCE:
        return _without_spread(baseline_rr, ablated_rr, d)
    boot = stats.bootstrap((d,), np.mean, n_resamples=n_bootstrap, method="percentile",
                           confidence_level=confidence, vectorized=True, rng=rng)
    t_test = stats.ttest_rel(ablated_rr, baseline_rr)
    perm = stats.permutation_test((ablated_rr, baseline_rr), _mean_difference, permutation_type="samples",
                                  vectorized=True, n_resamples=n_permutations, alternative="two-sided", rng=rng)
    return PairedComparison(
        baseline_mrr=float(baseline_rr.mean()), ablated_mrr=float(ablated_rr.mean()), delta_mrr=delta,
        ci_low=float(boot.confidence_interval.low), ci_high=float(boot.confidence_interval.high),
        t_stat=float(t_test.statistic), p_value=float(t_test.pvalue), p_perm=float(perm.pvalue),
        cohens_d=float(delta / d.std(ddof=1)), n_queries=n,
    )


def _without_spread(baseline_rr: np.ndarray, ablated_rr: np.ndarray, d: np.ndarray) -> PairedComparison:
    """Fewer than two queries, or every query's difference the same: the tests' statistics are undefined
    (0/0 or x/0) in scipy, so they are set here by their definitions.

    One query (or none): no test is possible; t, p, d and the interval are NaN (never significant), and the
    sign-flip p is 1 (both sign patterns are as extreme as the observed one).
    All zero (the usual case: the ablation changed no rank): no evidence of an effect, t = 0, p = 1, d = 0.
    All equal and non-zero: t and d are infinite, the t-test's p is 0 (as scipy reports it), and the exact
    sign-flip p is 2 / 2^n (only the observed signs and their full flip are as extreme).
    """
    n = len(d)
    nan = float("nan")
    baseline_mrr = float(baseline_rr.mean()) if n else nan
    ablated_mrr = float(ablated_rr.mean()) if n else nan
    if n < 2:
        delta = float(d.mean()) if n else nan
        return PairedComparison(baseline_mrr, ablated_mrr, delta, nan, nan, nan, nan, 1.0, nan, n)
    delta = float(d.mean())
    if abs(delta) <= SPREAD_TOLERANCE:
        t_stat, p_value, p_perm, cohens_d = 0.0, 1.0, 1.0, 0.0
    else:
        t_stat = cohens_d = float(np.copysign(np.inf, delta))
        p_value, p_perm = 0.0, float(2.0 ** (1 - n))
    return PairedComparison(baseline_mrr, ablated_mrr, delta, delta, delta, t_stat, p_value, p_perm, cohens_d, n)


def unreachable_significance(n_conditions: int, settings) -> str | None:
    """A warning when no condition can be significant: a sign-flip p is never below 2/(n_permutations + 1)
    (scipy counts the observed statistic among the resamples), and Holm multiplies the smallest p by the
    number of conditions. (BH's smallest adjusted p can stay at that floor.)"""
    if settings.primary_test != "permutation" or settings.correction != "holm" or n_conditions < 2:
        return None
    floor = 2 / (settings.n_permutations + 1)
    if n_conditions * floor < settings.alpha:
        return None
    needed = int(np.ceil(2 * n_conditions / settings.alpha))
    return (f"with the permutation test and Holm over {n_conditions} conditions, no p_adjusted can fall below "
            f"{n_conditions * floor:.3g} >= alpha {settings.alpha}: raise ablation.n_permutations above {needed}, "
            f"or use ablation.primary_test=t or ablation.correction=bh")
