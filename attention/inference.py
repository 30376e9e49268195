"""Statistical tests on per-example, per-head attention statistics.

Every input is an array [n_examples, n_layers, n_heads] (float64; NaN where a statistic is undefined for an
example). Each function returns one row per head (or per head and category, or per pair of layers) with the test's
statistic, its p-value, the p-value adjusted over all rows of that table (the family, through
`codesearch.statistics.adjust_pvalues`), `significant` (p_adjusted < alpha, strictly), an effect size and `n`, the
examples the test used. A head's row carries `condition` (its name, `L3H7`), `layer` and `head`; rows come in the
heads' flat order (layer by layer).

Examples with a NaN are left out per test (per head: its own NaNs only). Degenerate cases, as in ablation/stats.py:

- Fewer than 2 usable examples (or, for a group test, fewer than 2 groups of 2): no test; statistic, p and effect
  size are NaN. A NaN p takes no part in the correction: its p_adjusted is NaN and it is never significant.
- No spread (t-tests: every difference the same, within SPREAD_TOLERANCE): scipy's t is 0/0 or x/0, so t and
  Cohen's d are set to their limits: all differences zero -> t = d = 0; all equal and non-zero -> t = d = +-inf.
  The p-value is the test's own p at that t: two-sided 1 at t = 0 and 0 at +-inf; one-sided ("greater") 0.5 at
  t = 0, 0 at +inf, 1 at -inf.
- No spread within groups (ANOVAs: every residual zero): all means equal -> F = 0, p = 1, eta squared 0; means
  differ -> F = inf, p = 0, eta squared 1.
"""
from __future__ import annotations

from collections import Counter
from itertools import combinations
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score
from statsmodels.stats.anova import AnovaRM
from statsmodels.stats.oneway import anova_oneway

from codesearch.errors import UserError
from codesearch.settings import Correction
from codesearch.statistics import adjust_pvalues
from heads.naming import HeadId

from .settings import CONSTRUCTS

# Attention statistics are masses, entropies and shares of order 1: a spread below this is float noise.
SPREAD_TOLERANCE = 1e-12
# Levene's p below this sends a head's group test to Welch's ANOVA.
LEVENE_ALPHA = 0.05

HEAD = ["condition", "layer", "head"]
TESTED = ["p_value", "p_adjusted", "significant"]
ENRICHMENT_COLUMNS = HEAD + ["category", "mean_mass", "mean_share", "enrichment", "mean_difference", "t_stat",
                             *TESTED, "cohens_d", "n"]
LAYER_ANOVA_COLUMNS = ["f_stat", "num_df", "den_df", *TESTED, "partial_eta_squared", "n_layers", "n", "n_excluded"]
LAYER_PAIR_COLUMNS = ["layer_a", "layer_b", "mean_a", "mean_b", "mean_difference", "t_stat", *TESTED, "cohens_d",
                      "n"]
GROUP_COLUMNS = HEAD + ["test", "levene_p", "f_stat", *TESTED, "eta_squared", "n_groups", "n"]
MATCHED_COLUMNS = HEAD + ["mean_matched", "mean_mismatched", "mean_difference", "t_stat", *TESTED, "cohens_d",
                          "auc", "n"]
COMPARISON_COLUMNS = HEAD + ["statistic", "mean_a", "mean_b", "mean_difference", "t_stat", *TESTED, "cohens_d", "n"]

NAN = float("nan")


class TTest(NamedTuple):
    t_stat: float
    p_value: float
    cohens_d: float     # mean(d) / sd(d, ddof=1): Cohen's d of the differences (d_z)


# -- 1. construct enrichment


def construct_enrichment(mass: dict[str, np.ndarray], share: dict[str, np.ndarray], correction: str = "holm",
                         alpha: float = 0.05) -> pd.DataFrame:
    """Per head and category: does the head attend to the category's code tokens more than their share?

    `mass[category]` [n, L, H]: the attention mass from the source rows to the category's code tokens;
    `share[category]` [n]: the category's share of the example's code tokens (what uniform attention would give).
    A one-sided one-sample t-test (scipy's ttest_1samp, alternative="greater") that mass - share > 0, over the
    examples with a share above 0 and a mass; enrichment = mean_mass / mean_share over those examples.
    Rows: category by category (in `mass`'s order), heads in flat order within each; corrected over all rows.
    """
    _check_family(correction, alpha)
    _check_categories(mass, share)
    rows = []
    for category, category_mass in mass.items():
        values = _values(f"mass[{category}]", category_mass)
        category_share = np.asarray(share[category], dtype=np.float64)
        if category_share.shape != values.shape[:1]:
            raise UserError(f"construct_enrichment: share[{category}] has shape {category_share.shape}, expected "
                            f"({values.shape[0]},): one share per example of mass[{category}] {values.shape}")
        for layer, index in _heads(values):
            column = values[:, layer, index]
            used = (category_share > 0) & ~np.isnan(column)     # a NaN share compares False: left out too
            rows.append({**_head(layer, index), "category": category,
                         **_enrichment(column[used], category_share[used])})
    return _corrected(rows, ENRICHMENT_COLUMNS, correction, alpha)


def _check_categories(mass: dict, share: dict) -> None:
    unknown = [name for name in mass if name not in CONSTRUCTS]
    if unknown:
        raise UserError(f"construct_enrichment: unknown categories {', '.join(map(str, unknown))}; known: "
                        f"{', '.join(CONSTRUCTS)}")
    missing = [name for name in mass if name not in share]
    if missing:
        raise UserError(f"construct_enrichment: no share for {', '.join(missing)}: mass and share need the same "
                        f"categories")
    shapes = {np.shape(values) for values in mass.values()}
    if len(shapes) > 1:
        raise UserError(f"construct_enrichment: the categories' mass arrays differ in shape: "
                        f"{', '.join(str(s) for s in sorted(shapes))}")


def _enrichment(mass: np.ndarray, share: np.ndarray) -> dict:
    """One head and category, on the usable examples: means, their ratio, and the one-sided test."""
    mean_mass, mean_share = _mean(mass), _mean(share)
    test = _one_sample_test(mass - share, alternative="greater")
    return {"mean_mass": mean_mass, "mean_share": mean_share,
            "enrichment": mean_mass / mean_share if len(mass) else NAN,
            "mean_difference": _mean(mass - share), "t_stat": test.t_stat, "p_value": test.p_value,
            "cohens_d": test.cohens_d, "n": len(mass)}


# -- 2. the layers


def layer_anova(values: np.ndarray, alpha: float = 0.05) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Where does the statistic change across layers? (anova, post-hoc pairs).

    `values` [n, L, H] -> each example's mean over the heads of each layer [n, L] (a NaN head makes that layer's
    mean NaN, so every kept example averages the same heads). Examples with a NaN in any layer are left out
    (`n_excluded`). A repeated-measures ANOVA (statsmodels' AnovaRM; subject = example, within = layer) gives a
    one-row table; partial eta squared = SS_layer / (SS_layer + SS_error) from the sums of squares of the [n, L]
    table (SS_error = SS_total - SS_layer - SS_example). The post-hoc table holds a paired t-test
    (scipy's ttest_rel of layer_b against layer_a) for every pair layer_a < layer_b, mean_difference =
    mean_b - mean_a, Holm-corrected over the pairs.
    """
    _check_family("holm", alpha)
    values = _values("values", values)
    if values.shape[1] < 2:
        raise UserError(f"layer_anova: values {values.shape} have {values.shape[1]} layer; the test needs at least 2")
    per_layer = values.mean(axis=2)
    complete = ~np.isnan(per_layer).any(axis=1)
    kept = per_layer[complete]
    anova = {**_repeated_measures(kept), "n_layers": kept.shape[1], "n": len(kept),
             "n_excluded": int((~complete).sum())}
    pairs = [_layer_pair(kept, a, b) for a, b in combinations(range(kept.shape[1]), 2)]
    return (_corrected([anova], LAYER_ANOVA_COLUMNS, "holm", alpha),
            _corrected(pairs, LAYER_PAIR_COLUMNS, "holm", alpha))


def _repeated_measures(table: np.ndarray) -> dict:
    """F, its degrees of freedom, p and partial eta squared of a one-way repeated-measures ANOVA of `table`
    [n subjects, k levels] (no NaN)."""
    n, k = table.shape
    if n < 2:
        return {"f_stat": NAN, "num_df": NAN, "den_df": NAN, "p_value": NAN, "partial_eta_squared": NAN}
    grand = table.mean()
    level_means, subject_means = table.mean(axis=0), table.mean(axis=1)
    residuals = table - level_means[None, :] - subject_means[:, None] + grand
    dfs = {"num_df": float(k - 1), "den_df": float((n - 1) * (k - 1))}
    if np.ptp(residuals) <= SPREAD_TOLERANCE:
        return {**_without_residual(np.ptp(level_means)), **dfs}
    ss_level = n * np.sum((level_means - grand) ** 2)
    ss_subject = k * np.sum((subject_means - grand) ** 2)
    ss_error = np.sum((table - grand) ** 2) - ss_level - ss_subject
    long = pd.DataFrame({"example": np.repeat(np.arange(n), k), "layer": np.tile(np.arange(k), n),
                         "value": table.ravel()})
    result = AnovaRM(long, "value", "example", within=["layer"]).fit().anova_table.iloc[0]
    return {"f_stat": float(result["F Value"]), "num_df": float(result["Num DF"]),
            "den_df": float(result["Den DF"]), "p_value": float(result["Pr > F"]),
            "partial_eta_squared": float(ss_level / (ss_level + ss_error))}


def _layer_pair(table: np.ndarray, a: int, b: int) -> dict:
    test = _paired_test(table[:, b], table[:, a])
    return {"layer_a": a, "layer_b": b, "mean_a": _mean(table[:, a]), "mean_b": _mean(table[:, b]),
            "mean_difference": _mean(table[:, b] - table[:, a]), "t_stat": test.t_stat, "p_value": test.p_value,
            "cohens_d": test.cohens_d, "n": len(table)}


# -- 3. groups of examples


def group_anova(values: np.ndarray, groups: list[str], correction: str = "bh", alpha: float = 0.05) -> pd.DataFrame:
    """Per head, a one-way ANOVA of `values` [n, L, H] across the groups of the examples (`groups`, one label per
    example).

    Groups with fewer than 2 examples are left out (fewer than 2 groups left: UserError); per head, its NaN
    examples are left out too, and then any group under 2 examples (fewer than 2 groups left: no test, test
    "none"). Levene's test (center="median") decides: p < LEVENE_ALPHA -> Welch's ANOVA (statsmodels'
    anova_oneway, use_var="unequal"), else the classic F (scipy's f_oneway). Welch's weights n/s^2 are infinite
    for a group without spread, so such a head takes the classic F whatever Levene says. eta_squared =
    SS_between / SS_total of the head's kept examples. BH over the heads by default.
    """
    _check_family(correction, alpha)
    values = _values("values", values)
    labels = np.asarray([str(g) for g in groups], dtype=object)
    if len(labels) != len(values):
        raise UserError(f"group_anova: {len(labels)} group labels for {len(values)} examples")
    sizes = Counter(labels.tolist())
    kept = sorted(g for g, size in sizes.items() if size >= 2)
    if len(kept) < 2:
        raise UserError(f"group_anova: {len(kept)} group(s) with at least 2 examples ({dict(sorted(sizes.items()))}); "
                        f"the test needs at least 2")
    rows = []
    for layer, index in _heads(values):
        column = values[:, layer, index]
        samples = [column[(labels == g) & ~np.isnan(column)] for g in kept]
        rows.append({**_head(layer, index), **_one_way([s for s in samples if len(s) >= 2])})
    return _corrected(rows, GROUP_COLUMNS, correction, alpha)


def _one_way(samples: list[np.ndarray]) -> dict:
    """The group test of one head's samples (each of 2 or more values)."""
    n = sum(len(s) for s in samples)
    out = {"n_groups": len(samples), "n": n}
    if len(samples) < 2:
        return {**out, "test": "none", "levene_p": NAN, "f_stat": NAN, "p_value": NAN, "eta_squared": NAN}
    if np.ptp(np.concatenate([s - s.mean() for s in samples])) <= SPREAD_TOLERANCE:
        limits = _without_residual(np.ptp([s.mean() for s in samples]))
        return {**out, "test": "classic", "levene_p": NAN, "f_stat": limits["f_stat"], "p_value": limits["p_value"],
                "eta_squared": limits["partial_eta_squared"]}
    levene_p = float(stats.levene(*samples, center="median").pvalue)
    every_group_spread = all(np.ptp(s) > SPREAD_TOLERANCE for s in samples)
    if levene_p < LEVENE_ALPHA and every_group_spread:
        result, test = anova_oneway(samples, use_var="unequal"), "welch"
    else:
        result, test = stats.f_oneway(*samples), "classic"
    return {**out, "test": test, "levene_p": levene_p, "f_stat": float(result.statistic),
            "p_value": float(result.pvalue), "eta_squared": _eta_squared(samples)}


def _eta_squared(samples: list[np.ndarray]) -> float:
    """SS_between / SS_total of a one-way layout."""
    pooled = np.concatenate(samples)
    grand = pooled.mean()
    between = sum(len(s) * (s.mean() - grand) ** 2 for s in samples)
    return float(between / np.sum((pooled - grand) ** 2))


def _without_residual(spread_of_means: float) -> dict:
    """An ANOVA whose residuals are all zero: F is 0/0 or x/0, set to its limit (see the module's docstring)."""
    if spread_of_means <= SPREAD_TOLERANCE:
        return {"f_stat": 0.0, "p_value": 1.0, "partial_eta_squared": 0.0}
    return {"f_stat": float("inf"), "p_value": 0.0, "partial_eta_squared": 1.0}


# -- 4. and 5. paired conditions


def matched_vs_mismatched(matched: np.ndarray, mismatched: np.ndarray, correction: str = "holm",
                          alpha: float = 0.05) -> pd.DataFrame:
    """Per head, each query with its own code (`matched` [n, L, H]) against the same query with a random other
    code (`mismatched`, the same examples in the same order).

    A paired t-test (scipy's ttest_rel, matched against mismatched; mean_difference = matched - mismatched) over
    the examples with both values, and `auc`: the ROC AUC (sklearn) of telling the true pair (1) from the false
    one (0) by the statistic, those examples' two values pooled (0.5: no better than chance; NaN without
    examples).
    """
    _check_family(correction, alpha)
    matched, mismatched = _same_shape("matched_vs_mismatched", "matched", matched, "mismatched", mismatched)
    rows = []
    for layer, index in _heads(matched):
        x, y = _pairs(matched[:, layer, index], mismatched[:, layer, index])
        test = _paired_test(x, y)
        rows.append({**_head(layer, index), "mean_matched": _mean(x), "mean_mismatched": _mean(y),
                     "mean_difference": _mean(x - y), **test._asdict(), "auc": _auc(x, y), "n": len(x)})
    return _corrected(rows, MATCHED_COLUMNS, correction, alpha)


def compare_models(a: np.ndarray, b: np.ndarray, statistic: str, correction: str = "holm",
                   alpha: float = 0.05) -> pd.DataFrame:
    """Per head, model b against model a (same architecture, same examples in the same order) on one `statistic`
    ([n, L, H] each): a paired t-test (scipy's ttest_rel of b against a; mean_difference = b - a) over the
    examples with both values."""
    _check_family(correction, alpha)
    a, b = _same_shape("compare_models", "a", a, "b", b)
    rows = []
    for layer, index in _heads(a):
        x, y = _pairs(a[:, layer, index], b[:, layer, index])
        test = _paired_test(y, x)
        rows.append({**_head(layer, index), "statistic": statistic, "mean_a": _mean(x), "mean_b": _mean(y),
                     "mean_difference": _mean(y - x), **test._asdict(), "n": len(x)})
    return _corrected(rows, COMPARISON_COLUMNS, correction, alpha)


def _pairs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The examples where both values are present."""
    both = ~np.isnan(x) & ~np.isnan(y)
    return x[both], y[both]


def _auc(matched: np.ndarray, mismatched: np.ndarray) -> float:
    if len(matched) == 0:
        return NAN
    labels = np.r_[np.ones(len(matched)), np.zeros(len(mismatched))]
    return float(roc_auc_score(labels, np.r_[matched, mismatched]))


# -- t-tests with their degenerate cases


def _paired_test(x: np.ndarray, y: np.ndarray, alternative: str = "two-sided") -> TTest:
    """scipy's ttest_rel of x against y [n], with the limits where the differences do not spread."""
    degenerate = _without_spread(x - y, alternative)
    if degenerate is not None:
        return degenerate
    result = stats.ttest_rel(x, y, alternative=alternative)
    return TTest(float(result.statistic), float(result.pvalue), _cohens_d(x - y))


def _one_sample_test(differences: np.ndarray, alternative: str = "two-sided") -> TTest:
    """scipy's ttest_1samp of the differences [n] against 0, with the limits where they do not spread."""
    degenerate = _without_spread(differences, alternative)
    if degenerate is not None:
        return degenerate
    result = stats.ttest_1samp(differences, 0.0, alternative=alternative)
    return TTest(float(result.statistic), float(result.pvalue), _cohens_d(differences))


def _without_spread(differences: np.ndarray, alternative: str) -> TTest | None:
    """The test where scipy's is undefined (see the module's docstring); None where scipy's applies."""
    n = len(differences)
    if n < 2:
        return TTest(NAN, NAN, NAN)
    if np.ptp(differences) > SPREAD_TOLERANCE:
        return None
    mean = float(differences.mean())
    t = 0.0 if abs(mean) <= SPREAD_TOLERANCE else float(np.copysign(np.inf, mean))
    return TTest(t, _p_at(t, n - 1, alternative), t)


def _p_at(t: float, df: int, alternative: str) -> float:
    """The t-test's p-value at t (finite or infinite)."""
    if alternative == "greater":
        return float(stats.t.sf(t, df))
    if alternative == "less":
        return float(stats.t.cdf(t, df))
    return float(min(1.0, 2 * stats.t.sf(abs(t), df)))


def _cohens_d(differences: np.ndarray) -> float:
    return float(differences.mean() / differences.std(ddof=1))


# -- shared


def _values(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 3:
        raise UserError(f"{name} has shape {values.shape}; expected [examples, layers, heads]")
    return values


def _same_shape(function: str, name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> tuple[np.ndarray, ...]:
    a, b = _values(name_a, a), _values(name_b, b)
    if a.shape != b.shape:
        raise UserError(f"{function}: {name_a} has shape {a.shape} but {name_b} has shape {b.shape}; the test pairs "
                        f"the same examples and heads, so the shapes must match")
    return a, b


def _check_family(correction: str, alpha: float) -> None:
    if correction not in tuple(Correction):
        raise UserError(f"correction={correction!r}: choose {' or '.join(Correction)}")
    if not 0 < alpha < 1:
        raise UserError(f"alpha={alpha}: a significance level lies strictly between 0 and 1")


def _heads(values: np.ndarray):
    """(layer, index) of every head of `values` [n, L, H], in flat order."""
    return [(layer, index) for layer in range(values.shape[1]) for index in range(values.shape[2])]


def _head(layer: int, index: int) -> dict:
    return {"condition": HeadId(layer, index).name, "layer": layer, "head": index}


def _mean(values: np.ndarray) -> float:
    """The mean, NaN without values (numpy would warn)."""
    return float(values.mean()) if len(values) else NAN


def _corrected(rows: list[dict], columns: list[str], correction: str, alpha: float) -> pd.DataFrame:
    """The table of `rows` with p_adjusted and significant over all of them (one family)."""
    frame = pd.DataFrame(rows, columns=columns)
    adjusted, significant = adjust_pvalues(frame["p_value"].to_numpy(dtype=np.float64), correction, alpha)
    frame["p_adjusted"] = adjusted
    frame["significant"] = significant
    return frame
