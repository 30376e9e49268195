"""A comparison's tables for a paper (Markdown, LaTeX), its summary and its heatmaps."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ablation.table import format_number, format_p, format_statistic, latex_escape
from heads.heatmap import layer_head_matrix, plot_matrix

from .figures import plot_study_matrix
from .settings import CompareConfig
from .studies import Study

if TYPE_CHECKING:
    from .study import Comparison

CORRECTIONS = {"holm": "Holm", "bh": "Benjamini-Hochberg"}


def printable(heads: pd.DataFrame) -> pd.DataFrame:
    """heads.csv as strings for a paper: with the paired tests when there are some, else each study's own
    significance and rank."""
    out = {"Head": heads["condition"], "ΔMRR A": heads["delta_mrr_a"].map(format_number),
           "ΔMRR B": heads["delta_mrr_b"].map(format_number), "B − A": heads["difference"].map(format_number)}
    if "t_stat" in heads:
        out |= {"95% CI": [f"[{format_number(lo)}, {format_number(hi)}]"
                           for lo, hi in zip(heads["ci_low"], heads["ci_high"])],
                "t": heads["t_stat"].map(format_statistic), "p": heads["p_value"].map(format_p),
                "p (adj.)": heads["p_adjusted"].map(format_p), "change": heads["change"].fillna("")}
    else:
        out |= {"sig. A": np.where(heads["significant_a"], "*", ""),
                "sig. B": np.where(heads["significant_b"], "*", ""),
                "rank A": heads["rank_a"].astype(str), "rank B": heads["rank_b"].astype(str)}
    return pd.DataFrame(out)


def to_markdown(table: pd.DataFrame, caption: str) -> str:
    return f"{caption}\n\n" + table.to_markdown(index=False, disable_numparse=True) + "\n"


def to_latex(table: pd.DataFrame, caption: str, label: str = "tab:head-comparison") -> str:
    table = table.rename(columns=latex_escape).map(latex_escape)
    body = table.style.hide(axis="index").to_latex(hrules=True, column_format="l" + "r" * (table.shape[1] - 1))
    return ("% needs \\usepackage{booktabs}\n\\begin{table}[t]\n\\centering\n\\small\n" + body
            + f"\\caption{{{latex_escape(caption)}}}\n\\label{{{label}}}\n\\end{{table}}\n")


def _study(study: Study, tag: str) -> str:
    r = study.ablation.record
    return f"{tag} = {study.name} ({r.model.name}, baseline MRR {r.baseline_mrr:.4f}, {r.protocol.n_queries} queries)"


def heads_caption(a: Study, b: Study, settings: CompareConfig, paired: bool, pairing: str, baseline: dict) -> str:
    head = (f"Head by head, {_study(a, 'A')} against {_study(b, 'B')}; {settings.masking}. ΔMRR: ablated − "
            f"baseline MRR in each study (negative where the head helps retrieval); B − A: "
            f"their difference (negative where the head matters more in B).")
    if not paired:
        return (f"{head} {pairing[0].upper()}{pairing[1:]}. sig.: significant in the study's own importance table; "
                f"rank: 1 = the head whose ablation costs the most MRR.")
    return (f"{head} 95% CI: paired bootstrap over the queries of d = (rr_B,head − rr_B,baseline) − (rr_A,head − "
            f"rr_A,baseline); p: paired t-test of d; p (adj.): {CORRECTIONS[str(settings.correction)]}-corrected "
            f"over the heads; change: the head gained or lost importance in B (p (adj.) < {settings.alpha}). "
            f"Baselines: MRR B − A = {format_number(baseline['difference'])} [{format_number(baseline['ci_low'])}, "
            f"{format_number(baseline['ci_high'])}], paired t-test p = {format_p(baseline['p_value'])}.")


def evidence_tables(evidence: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """probes.csv (selectivity per task) and attention.csv (statistics per input), long, when there are any."""
    probes = [frame.assign(task=key.split(":", 1)[1]) for key, frame in evidence.items()
              if key.startswith("selectivity:")]
    attention = [frame.assign(input=key.split(":")[1], statistic=key.split(":")[2]) for key, frame in evidence.items()
                 if key.startswith("attention:")]
    tables = {}
    values = ["value_a", "value_b", "difference"]
    if probes:
        tables["probes.csv"] = pd.concat(probes, ignore_index=True)[["task", "condition", "layer", "head", *values]]
        tables["probes.csv"] = tables["probes.csv"].rename(columns={"value_a": "selectivity_a",
                                                                   "value_b": "selectivity_b"})
    if attention:
        tables["attention.csv"] = pd.concat(attention, ignore_index=True)[["input", "statistic", "condition", "layer",
                                                                          "head", *values]]
    return tables


def _marks(heads: pd.DataFrame, column: str, layers: int, per_layer: int) -> np.ndarray:
    return layer_head_matrix(heads.assign(mark=heads[column].astype(float)), "mark", layers, per_layer) == 1.0


def head_heatmaps(folder: Path, heads: pd.DataFrame, a: Study, b: Study, paired: bool, settings: CompareConfig,
                  layers: int, per_layer: int) -> list[str]:
    """heatmap_a, heatmap_b (each study's ΔMRR, its own significant heads boxed) and heatmap_difference (B − A;
    boxed: a significant change, only when the studies are paired)."""
    label = "ΔMRR (ablated − baseline)"
    paths = []
    for tag, study in (("a", a), ("b", b)):
        title = (f"{tag.upper()}: {study.name}\n{settings.masking}; cells: ΔMRR × 100\n"
                 f"boxed * = significant in its own table")
        paths += plot_matrix(layer_head_matrix(heads, f"delta_mrr_{tag}", layers, per_layer), title, label,
                             folder / f"heatmap_{tag}", marked=_marks(heads, f"significant_{tag}", layers, per_layer))
    if paired:
        note = f"boxed * = significant change ({CORRECTIONS[str(settings.correction)]}, alpha {settings.alpha})"
        marked = _marks(heads, "significant", layers, per_layer)
    else:
        note, marked = "no per-query test: the studies do not pair", None
    title = f"B − A: {b.name}\nminus {a.name}\ncells: ΔMRR difference × 100\n{note}"
    paths += plot_matrix(layer_head_matrix(heads, "difference", layers, per_layer), title, "ΔMRR B − ΔMRR A",
                         folder / "heatmap_difference", marked=marked)
    return [p.name for p in paths]


def evidence_heatmaps(folder: Path, evidence: dict[str, pd.DataFrame], a: Study, b: Study, layers: int,
                      per_layer: int) -> list[str]:
    """difference_<kind>_<name>: B − A of each probe task's selectivity and each attention statistic."""
    paths = []
    for key, frame in evidence.items():
        title = f"{key}, B − A: {b.name}\nminus {a.name}\ncells: difference × 100"
        paths += plot_matrix(layer_head_matrix(frame, "difference", layers, per_layer), title, "B − A",
                             folder / ("difference_" + key.replace(":", "_")))
    return [p.name for p in paths]


def matrix_figure(folder: Path, matrix: pd.DataFrame, settings: CompareConfig) -> list[str]:
    title = f"Spearman ρ of the studies' ΔMRR maps ({settings.masking})"
    return [p.name for p in plot_study_matrix(matrix, title, "Spearman ρ", folder / "correlation_matrix")]


def _table(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, floatfmt=".4g") if len(frame) else "(none)"


def summary_markdown(comparison: Comparison) -> str:
    """The comparison in one page: the studies, whether and why they are paired, the baseline test, the
    correlations and overlaps, and the heads that changed."""
    c = comparison
    facts = pd.DataFrame(c.study_facts())[["name", "model", "baseline_mrr", "protocol", "n_queries",
                                           "candidates_per_query"]]
    parts = ["# Comparison of studies", "", _table(facts), "", f"**Pairing.** {c.pairing}", ""]
    if c.baseline:
        parts += ["## Baselines, paired over queries (B − A)", "", _table(pd.DataFrame([c.baseline])), ""]
    parts += ["## Correlations of the per-head maps", "", _table(c.correlations), "",
              "## Overlap of the heads that matter", "", _table(c.overlaps), ""]
    if c.heads is not None and "change" in c.heads:
        gained = c.heads.loc[c.heads["change"] == "gained", "condition"].tolist()
        lost = c.heads.loc[c.heads["change"] == "lost", "condition"].tolist()
        parts += ["## Heads that changed (paired, corrected)", "",
                  f"Gained importance in B: {', '.join(gained) or 'none'}.",
                  f"Lost importance in B: {', '.join(lost) or 'none'}.", ""]
    return "\n".join(parts)
