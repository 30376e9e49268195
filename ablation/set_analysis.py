"""The statistics of head sets, from per-query reciprocal ranks and the plan that named the sets: pruning curves
and how far each order prunes, one head per layer, pairwise interactions and Shapley values.

Every set is compared with the unmasked baseline on the same queries by `ablation.stats.compare_paired` (paired
bootstrap CI, paired t-test, sign-flip permutation test; its generator seeded by the study seed and the set's name),
and each table's p-values are corrected over its own family with the study's correction (`ablation.correction`,
on `ablation.primary_test`): the curves over their distinct sets, the layer table over its rows, the interactions
over the pairs.

An interaction is measured in drops of MRR (drop(S) = MRR of the baseline − MRR with S masked):
interaction(a, b) = drop(a, b) − drop(a) − drop(b), per query rr_a + rr_b − rr_ab − rr_baseline. Positive: the
pair together costs more than its parts (each covers for the other: redundant); negative: less (they work only
together: synergistic).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from codesearch.statistics import adjust_pvalues

from .head_sets import BEST, NONE_KEPT, SetPlan
from .settings import ReportSettings
from .stats import compare_paired, condition_rng

TESTS = ["delta_mrr", "ci_low", "ci_high", "t_stat", "p_value", "p_perm", "cohens_d", "n_queries"]
LEVELS = (0.99, 0.95, 0.90)
NOT_SIGNIFICANT = "no significant drop"


@dataclass
class SetTables:
    curve: pd.DataFrame
    retention: pd.DataFrame
    layers: pd.DataFrame
    pairs: pd.DataFrame
    shapley: pd.DataFrame


class _Tests:
    """Each set's paired comparison with the baseline, made once per (mode, side, set)."""

    def __init__(self, baseline_rr: np.ndarray, settings: ReportSettings):
        self.baseline_rr, self.settings, self.done = baseline_rr, settings, {}

    def of(self, plan: SetPlan, name: str, rr: np.ndarray) -> dict:
        key = (plan.mode, plan.side, name)
        if key not in self.done:
            s = self.settings
            c = compare_paired(self.baseline_rr, rr, condition_rng(s.seed, name), n_bootstrap=s.n_bootstrap,
                               n_permutations=s.n_permutations)
            self.done[key] = {"mrr": c.ablated_mrr, **{k: getattr(c, k) for k in TESTS}}
        return self.done[key]


def _unmasked(n_queries: int, baseline_mrr: float) -> dict:
    """The step with nothing pruned: the baseline itself, no test."""
    return {"mrr": baseline_mrr, "delta_mrr": 0.0, "ci_low": 0.0, "ci_high": 0.0, "t_stat": np.nan,
            "p_value": np.nan, "p_perm": np.nan, "cohens_d": np.nan, "n_queries": n_queries}


def correct(frame: pd.DataFrame, settings: ReportSettings, keys: list[str]) -> pd.DataFrame:
    """p_adjusted and significant over the family of distinct tests in `frame` (rows with the same `keys` are one
    test); rows without a p-value take no part."""
    frame = frame.copy()
    primary = "p_value" if settings.primary_test == "t" else "p_perm"
    if frame.empty:
        return frame.assign(p_adjusted=pd.Series(dtype=float), significant=pd.Series(dtype=bool))
    distinct = frame.dropna(subset=[primary]).drop_duplicates(subset=keys)
    adjusted, significant = adjust_pvalues(distinct[primary].to_numpy(), settings.correction, settings.alpha)
    found = {tuple(row): (a, s) for row, a, s in zip(distinct[keys].itertuples(index=False), adjusted, significant)}
    looked_up = [found.get(tuple(row), (np.nan, False)) for row in frame[keys].itertuples(index=False)]
    frame["p_adjusted"] = [a for a, _ in looked_up]
    frame["significant"] = [bool(s) for _, s in looked_up]
    return frame


def curve_table(groups: list[tuple[SetPlan, dict]], baseline_rr: np.ndarray, tests: _Tests) -> pd.DataFrame:
    baseline_mrr = float(np.mean(baseline_rr))
    rows = []
    for plan, rr in groups:
        n = len(plan.universe)
        for point in plan.curve:
            measured = tests.of(plan, point.condition, rr[point.condition]) if point.n_pruned else \
                _unmasked(len(baseline_rr), baseline_mrr)
            rows.append({"mode": plan.mode, "side": plan.side, "order": point.order, "seed": point.seed,
                         "n_pruned": point.n_pruned, "fraction_pruned": point.n_pruned / n,
                         "added": "+".join(point.added), "condition": point.condition, **measured,
                         "relative_mrr": measured["mrr"] / baseline_mrr if baseline_mrr else np.nan})
    frame = pd.DataFrame(rows, columns=["mode", "side", "order", "seed", "n_pruned", "fraction_pruned", "added",
                                        "condition", "mrr", "relative_mrr", *TESTS])
    frame["seed"] = frame["seed"].astype("Int64")
    return frame


def _kept_until(curve: pd.DataFrame, keeps: np.ndarray) -> tuple[pd.Series, float]:
    """The last point before the curve first fails `keeps`, and the fraction where it fails (NaN: never)."""
    failing = np.flatnonzero(~keeps)
    if not len(failing):
        return curve.iloc[-1], np.nan
    first = failing[0]
    return curve.iloc[max(first - 1, 0)], float(curve.iloc[first]["fraction_pruned"])


def retention_table(curve: pd.DataFrame, baseline_mrr: float) -> pd.DataFrame:
    """Per order (each random seed, and the random orders' mean), how much can be pruned before MRR first falls
    below 99 / 95 / 90 % of the baseline, and before the first significant drop."""
    rows = []
    for (mode, side, order), of_order in curve.groupby(["mode", "side", "order"], sort=False):
        seeds = of_order.groupby("seed", dropna=False, sort=True)
        curves = [(int(seed) if pd.notna(seed) else None, c.sort_values("n_pruned")) for seed, c in seeds]
        if order == "random" and len(curves) > 1:
            mean = of_order.groupby("n_pruned", as_index=False).agg(fraction_pruned=("fraction_pruned", "first"),
                                                                     mrr=("mrr", "mean"))
            curves.append(("mean", mean.assign(significant=False)))
        for seed, c in curves:
            criteria = [(f"{level:.0%} of baseline MRR", c["mrr"].to_numpy() >= level * baseline_mrr)
                        for level in LEVELS]
            if seed != "mean":
                criteria.append((NOT_SIGNIFICANT, ~(c["significant"].to_numpy() & (c["delta_mrr"].to_numpy() < 0))))
            for criterion, keeps in criteria:
                point, fails_at = _kept_until(c, keeps)
                rows.append({"mode": mode, "side": side, "order": order, "seed": seed, "criterion": criterion,
                             "n_pruned": int(point["n_pruned"]), "fraction_pruned": float(point["fraction_pruned"]),
                             "mrr": float(point["mrr"]), "first_failing_fraction": fails_at})
    frame = pd.DataFrame(rows, columns=["mode", "side", "order", "seed", "criterion", "n_pruned", "fraction_pruned",
                                        "mrr", "first_failing_fraction"])
    frame["seed"] = pd.Series([row["seed"] for row in rows], dtype=object)   # a seed, "mean" or none: not 4.0
    return frame


def best_kept(plan: SetPlan, rr: dict) -> dict[int, str]:
    """Per layer, the head whose keeping alone gives the highest MRR (ties: the lower head)."""
    best: dict[int, tuple[float, str]] = {}
    for choice in plan.layers:
        if choice.kept in (NONE_KEPT, BEST):
            continue
        mrr = float(np.mean(rr[choice.condition]))
        if choice.layer not in best or mrr > best[choice.layer][0]:
            best[choice.layer] = (mrr, choice.kept)
    return {layer: head for layer, (_, head) in best.items()}


def layer_table(groups: list[tuple[SetPlan, dict]], tests: _Tests) -> pd.DataFrame:
    rows = []
    for plan, rr in groups:
        best = best_kept(plan, rr) if plan.layers else {}
        for choice in plan.layers:
            head = choice.kept not in (NONE_KEPT, BEST)
            rows.append({"mode": plan.mode, "side": plan.side, "layer": choice.layer if choice.layer >= 0 else None,
                         "kept": choice.kept, "head": int(choice.kept.split("H")[1]) if head else None,
                         "best": head and best.get(choice.layer) == choice.kept, "condition": choice.condition,
                         **tests.of(plan, choice.condition, rr[choice.condition])})
    frame = pd.DataFrame(rows, columns=["mode", "side", "layer", "kept", "head", "best", "condition", "mrr", *TESTS])
    for column in ("layer", "head"):
        frame[column] = frame[column].astype("Int64")
    return frame


def pair_table(groups: list[tuple[SetPlan, dict]], baseline_rr: np.ndarray, settings: ReportSettings) -> pd.DataFrame:
    baseline_mrr = float(np.mean(baseline_rr))
    rows = []
    for plan, rr in groups:
        for pair in plan.pairs:
            a, b, ab = rr[pair.a], rr[pair.b], rr[pair.condition]
            # d_q = (rr_a + rr_b) − (rr_ab + rr_baseline): the interaction of drops, query by query
            c = compare_paired(ab + baseline_rr, a + b, condition_rng(settings.seed, f"interaction:{pair.condition}"),
                               n_bootstrap=settings.n_bootstrap, n_permutations=settings.n_permutations)
            rows.append({"mode": plan.mode, "side": plan.side, "a": pair.a, "b": pair.b, "condition": pair.condition,
                         "drop_a": baseline_mrr - float(a.mean()), "drop_b": baseline_mrr - float(b.mean()),
                         "drop_ab": baseline_mrr - float(ab.mean()), "interaction": c.delta_mrr,
                         "ci_low": c.ci_low, "ci_high": c.ci_high, "t_stat": c.t_stat, "p_value": c.p_value,
                         "p_perm": c.p_perm, "cohens_d": c.cohens_d, "n_queries": c.n_queries})
    return pd.DataFrame(rows, columns=["mode", "side", "a", "b", "condition", "drop_a", "drop_b", "drop_ab",
                                       "interaction", "ci_low", "ci_high", "t_stat", "p_value", "p_perm", "cohens_d",
                                       "n_queries"])


def with_kinds(pairs: pd.DataFrame) -> pd.DataFrame:
    """`kind`: redundant (significant, positive) or synergistic (significant, negative)."""
    kinds = np.where(pairs["interaction"] > 0, "redundant", "synergistic")
    return pairs.assign(kind=np.where(pairs["significant"], kinds, ""))


def shapley_table(groups: list[tuple[SetPlan, dict]], baseline_rr: np.ndarray) -> pd.DataFrame:
    """Each top head's mean marginal drop of MRR over the permutations (its Shapley value; the values sum to the
    drop of the whole top-K set) and the standard error of that mean (0 when every permutation was taken)."""
    baseline_mrr = float(np.mean(baseline_rr))
    rows = []
    for plan, rr in groups:
        if not plan.shapley:
            continue
        marginals: dict[str, list[float]] = {head: [] for head in plan.top}
        for permutation in plan.shapley:
            before = 0.0
            for head, name in zip(permutation, plan.prefix_sets(permutation)):
                drop = baseline_mrr - float(np.mean(rr[name]))
                marginals[head].append(drop - before)
                before = drop
        n = len(plan.shapley)
        for rank, head in enumerate(plan.top, start=1):
            values = np.asarray(marginals[head])
            se = 0.0 if plan.shapley_exact else float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan
            rows.append({"mode": plan.mode, "side": plan.side, "head": head, "rank": rank,
                         "drop_alone": baseline_mrr - float(np.mean(rr[head])), "shapley": float(values.mean()),
                         "se": se, "n_permutations": n, "exact": plan.shapley_exact})
    return pd.DataFrame(rows, columns=["mode", "side", "head", "rank", "drop_alone", "shapley", "se",
                                       "n_permutations", "exact"])


def set_tables(groups: list[tuple[SetPlan, dict]], baseline_rr: np.ndarray, settings: ReportSettings) -> SetTables:
    """Every table of the plans' sets. `groups`: (plan, {set name: per-query rr in the baseline's query order})."""
    baseline_rr = np.asarray(baseline_rr, dtype=np.float64)
    tests = _Tests(baseline_rr, settings)
    curve = correct(curve_table(groups, baseline_rr, tests), settings, ["mode", "side", "condition"])
    return SetTables(
        curve=curve, retention=retention_table(curve, float(baseline_rr.mean())),
        layers=correct(layer_table(groups, tests), settings, ["mode", "side", "condition"]),
        pairs=with_kinds(correct(pair_table(groups, baseline_rr, settings), settings, ["mode", "side", "condition"])),
        shapley=shapley_table(groups, baseline_rr))


def _masking_groups(tables: SetTables) -> list[tuple[str, str]]:
    frames = (tables.curve, tables.layers, tables.pairs, tables.shapley)
    return sorted({(m, s) for f in frames if len(f) for m, s in zip(f["mode"], f["side"])})


def findings(tables: SetTables) -> dict:
    """The numbers a reader cites, for the record and the W&B summary: per order the fraction pruned keeping 95% of
    the baseline MRR, the MRR of the row keeping each layer's best head, the pairs found redundant or synergistic.
    Tables of several ways of masking give one such dict per `<mode>-<side>`."""
    def of(mode: str, side: str) -> dict:
        def rows(frame: pd.DataFrame) -> pd.DataFrame:
            return frame[(frame["mode"] == mode) & (frame["side"] == side)]
        out: dict = {}
        keeps = rows(tables.retention)
        keeps = keeps[keeps["criterion"] == f"{0.95:.0%} of baseline MRR"]
        if len(keeps):
            out["fraction_keeping_95"] = {(f"random-{r.seed}" if r.order == "random" else r.order): r.fraction_pruned
                                          for r in keeps.itertuples()}
        best = rows(tables.layers)
        best = best[best["kept"] == BEST]
        if len(best):
            out["best_head_per_layer_mrr"] = float(best["mrr"].iloc[0])
        pairs = rows(tables.pairs)
        if len(pairs):
            out["redundant_pairs"] = [f"{r.a}+{r.b}" for r in pairs.itertuples() if r.kind == "redundant"]
            out["synergistic_pairs"] = [f"{r.a}+{r.b}" for r in pairs.itertuples() if r.kind == "synergistic"]
        return out
    groups = _masking_groups(tables)
    if len(groups) == 1:
        return of(*groups[0])
    return {f"{mode}-{side}": of(mode, side) for mode, side in groups}
