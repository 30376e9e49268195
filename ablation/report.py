"""From per-query reciprocal ranks to the citable report: statistics per condition, the correction over all
of them, and the exported files. Shared by a single `ablate` run and by `aggregate` over a sweep's runs, so
both give the same table from the same ranks."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from codesearch.files import atomic_write_csv, atomic_write_text
from codesearch.statistics import adjust_pvalues
from heads.heatmap import layer_head_matrix, plot_matrix

from .conditions import Condition
from .settings import ReportSettings
from .stats import compare_paired, condition_rng
from .table import importance_frame, to_latex, to_markdown


@dataclass
class ConditionResult:
    condition: Condition
    rr: np.ndarray                  # per query, in the baseline's query order
    grad_score: float | None = None


@dataclass
class StudyFacts:
    """What a caption says about the study."""
    model: str
    baseline_mrr: float
    n_queries: int
    protocol: str
    candidates_per_query: int
    modes: tuple[str, ...]
    sides: tuple[str, ...]


def _sort_key(result: ConditionResult):
    c = result.condition
    head = c.single_head
    return (head is None, (head.layer, head.index) if head else (0, 0), c.name, c.mode, c.side)


def importance_report(baseline_rr: np.ndarray, results: list[ConditionResult], query_ids: list[str],
                      settings: ReportSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(importance table, long per-query frame). Rows in layer/head order, sets last."""
    rows = []
    per_query = [pd.DataFrame({"query_id": query_ids, "condition": "baseline", "rr": baseline_rr})]
    for result in sorted(results, key=_sort_key):
        condition = result.condition
        comparison = compare_paired(baseline_rr, result.rr, condition_rng(settings.seed, condition.name),
                                    n_bootstrap=settings.n_bootstrap, n_permutations=settings.n_permutations)
        head = condition.single_head
        rows.append({
            "condition": condition.name, "layer": head.layer if head else None, "head": head.index if head else None,
            "mode": condition.mode, "side": condition.side, **comparison.as_dict(),
            "grad_score": np.nan if result.grad_score is None else float(result.grad_score),
        })
        per_query.append(pd.DataFrame({"query_id": query_ids, "condition": condition.name, "rr": result.rr,
                                       "mode": condition.mode, "side": condition.side}))
    frame = importance_frame(rows)
    primary = frame["p_value"] if settings.primary_test == "t" else frame["p_perm"]
    frame["p_adjusted"], frame["significant"] = adjust_pvalues(primary.to_numpy(), settings.correction,
                                                                settings.alpha)
    long = pd.concat(per_query, ignore_index=True)
    # mode and side only say something when a study mixes them (a sweep over modes and sides).
    if long["mode"].dropna().nunique() <= 1 and long["side"].dropna().nunique() <= 1:
        long = long[["query_id", "condition", "rr"]]
    return frame, long


def gradient_agreement(frame: pd.DataFrame) -> list[dict]:
    """Spearman rank correlation of grad_score with the exact importance (-ΔMRR) over the single heads, one entry
    per (mode, side) group: a study may mix them, and a head then has one exact value per group."""
    out = []
    singles = frame.dropna(subset=["grad_score"])
    for (mode, side), group in singles.groupby(["mode", "side"], sort=True):
        n = len(group)
        entry = {"mode": mode, "side": side, "spearman_rho": None, "p_value": None, "n_heads": n}
        if n >= 3 and group["grad_score"].nunique() > 1 and group["delta_mrr"].nunique() > 1:
            result = spearmanr(group["grad_score"], -group["delta_mrr"])
            entry.update(spearman_rho=float(result.statistic), p_value=float(result.pvalue))
        out.append(entry)
    return out


def masking(facts: StudyFacts) -> str:
    modes = "/".join(facts.modes)
    sides = "/".join(facts.sides)
    return f"{modes} mask, {sides} side" + ("s" if facts.sides == ("both",) else "")


PROTOCOL_WORDS = {"whole_pool": "whole pool", "csn": "CodeSearchNet batches",
                  "rerank": "a retriever's top k re-ranked by the cross-encoder"}


def describe_baseline(facts: StudyFacts) -> str:
    """The unmasked baseline a caption compares with: `MRR 0.6123, 600 queries, whole pool, 758 candidates ...`."""
    protocol = PROTOCOL_WORDS.get(facts.protocol, facts.protocol) + \
        f", {facts.candidates_per_query} candidates per query"
    return f"MRR {facts.baseline_mrr:.4f}, {facts.n_queries} queries, {protocol}"


def describe_test(settings: ReportSettings) -> tuple[str, str]:
    """(the primary test, the correction), as a caption names them."""
    test = "paired t-test" if settings.primary_test == "t" else "paired sign-flip permutation test"
    return test, "Holm" if settings.correction == "holm" else "Benjamini-Hochberg"


def caption(facts: StudyFacts, settings: ReportSettings) -> str:
    test, correction = describe_test(settings)
    return (f"Head ablation of {facts.model} ({masking(facts)}): change in MRR against the unmasked baseline "
            f"({describe_baseline(facts)}). 95% CI: paired bootstrap; "
            f"p (adj.): {test}, {correction}-corrected over all rows; * = significant at alpha = {settings.alpha}.")


def figure_title(facts: StudyFacts, settings: ReportSettings) -> str:
    correction = "Holm" if settings.correction == "holm" else "BH"
    return (f"{facts.model}: {masking(facts)}; baseline MRR {facts.baseline_mrr:.3f} "
            f"({facts.protocol}, {facts.n_queries} queries)\n"
            f"cells: ΔMRR × 100; boxed * = significant ({correction}, alpha {settings.alpha})")


def write_report(out: Path, frame: pd.DataFrame, per_query: pd.DataFrame, facts: StudyFacts,
                 settings: ReportSettings, n_layers: int, n_heads: int) -> list[str]:
    """importance.csv/.md/.tex, per_query.csv and (for single heads) heatmap.png/.svg; returns the file names."""
    atomic_write_csv(out / "per_query.csv", per_query)
    atomic_write_csv(out / "importance.csv", frame)
    text = caption(facts, settings)
    atomic_write_text(out / "importance.md", to_markdown(frame, text))
    atomic_write_text(out / "importance.tex", to_latex(frame, text))
    files = ["importance.csv", "importance.md", "importance.tex", "per_query.csv"]
    singles = frame[frame["layer"].notna()]
    groups = list(singles.groupby(["mode", "side"], sort=True))
    for (mode, side), group in groups:
        # One map per way of masking: a head has one exact value in each.
        stem = out / ("heatmap" if len(groups) == 1 else f"heatmap-{mode}-{side}")
        group_facts = replace(facts, modes=(mode,), sides=(side,))
        files += [p.name for p in plot_heatmap(group, n_layers, n_heads, figure_title(group_facts, settings), stem)]
    return files


def plot_heatmap(frame: pd.DataFrame, n_layers: int, n_heads: int, title: str, stem: Path) -> list[Path]:
    """ΔMRR per head, significant heads boxed and starred."""
    delta = layer_head_matrix(frame, "delta_mrr", n_layers, n_heads)
    significant = layer_head_matrix(frame.assign(significant=frame["significant"].astype(float)), "significant",
                                    n_layers, n_heads) == 1.0
    return plot_matrix(delta, title, "ΔMRR (ablated − baseline)", stem, diverging=True, marked=significant)
