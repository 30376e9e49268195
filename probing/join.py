"""The probes beside the ablation: does a head that encodes more lose more MRR when masked?"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

from ablation.record import FinishedAblation
from codesearch.files import atomic_write_csv, atomic_write_text

JOINED_COLUMNS = ["task", "condition", "layer", "head", "accuracy", "control_accuracy", "selectivity", "delta_mrr",
                  "ci_low", "ci_high", "p_adjusted", "significant"]


def join_with_ablation(frame: pd.DataFrame, ablation: FinishedAblation | None,
                       folder: Path) -> tuple[dict, list[str]]:
    """Per task, the Spearman correlation of each head's selectivity with its ΔMRR, written with both side by side
    to `probe_vs_ablation.csv` and `.md`; returns ({source, by_task} for the run's record, the files written)."""
    if ablation is None:
        print("no single-head ablation of this study yet: run `codebert-heads ablate` with the same data and model "
              "settings to join probes with ablation", file=sys.stderr)
        return {"source": None}, []
    table = ablation.single_heads()
    joined = frame.merge(table[["condition", "delta_mrr", "ci_low", "ci_high", "p_adjusted", "significant"]],
                         on="condition", how="inner")
    by_task = {}
    for task, part in joined.groupby("task", sort=False):
        usable = len(part) >= 3 and part["selectivity"].nunique() > 1 and part["delta_mrr"].nunique() > 1
        result = spearmanr(part["selectivity"], part["delta_mrr"]) if usable else None
        by_task[task] = {"spearman_rho": float(result.statistic) if result else None,
                         "p_value": float(result.pvalue) if result else None, "n_heads": int(len(part))}
    atomic_write_csv(Path(folder) / "probe_vs_ablation.csv", joined[JOINED_COLUMNS])
    lines = ["Rank correlation (Spearman) of each head's probe selectivity with its ablation ΔMRR "
             f"(from {ablation.folder}); negative: heads that encode more lose more MRR when masked.", "",
             "| task | rho | p | heads |", "| --- | ---: | ---: | ---: |"]
    for task, values in by_task.items():
        rho = "–" if values["spearman_rho"] is None else f"{values['spearman_rho']:+.3f}"
        pval = "–" if values["p_value"] is None else f"{values['p_value']:.3g}"
        lines.append(f"| {task} | {rho} | {pval} | {values['n_heads']} |")
    lines += ["", joined[JOINED_COLUMNS].to_markdown(index=False, floatfmt=".4f")]
    atomic_write_text(Path(folder) / "probe_vs_ablation.md", "\n".join(lines) + "\n")
    return {"source": str(ablation.folder), "by_task": by_task}, ["probe_vs_ablation.csv", "probe_vs_ablation.md"]
