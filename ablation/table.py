"""The importance table: one row per ablated head or head set, as CSV, Markdown and LaTeX (booktabs)."""
from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ["condition", "layer", "head", "mode", "side", "baseline_mrr", "ablated_mrr", "delta_mrr", "ci_low",
           "ci_high", "t_stat", "p_value", "p_perm", "p_adjusted", "cohens_d", "significant", "grad_score",
           "n_queries"]

# What the paper versions show, with their headers.
PRINTED = [("condition", "Head"), ("mask", "Mask"), ("delta_mrr", "ΔMRR"), ("ci", "95% CI"),
           ("t_stat", "t"), ("p_value", "p"), ("p_perm", "p (perm.)"), ("p_adjusted", "p (adj.)"),
           ("cohens_d", "d"), ("grad_score", "grad."), ("significant", "sig.")]


def importance_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in frame:
            frame[column] = np.nan
    frame = frame[COLUMNS]
    frame["layer"] = frame["layer"].astype("Int64")
    frame["head"] = frame["head"].astype("Int64")
    frame["n_queries"] = frame["n_queries"].astype("Int64")
    frame["significant"] = frame["significant"].astype(bool)
    return frame


def format_number(value: float, digits: int = 4) -> str:
    if value is None or np.isnan(value):
        return "–"
    return f"{value:+.{digits}f}"


def format_p(value: float) -> str:
    if value is None or np.isnan(value):
        return "–"
    return f"{value:.2e}" if value < 1e-3 else f"{value:.3f}"


def format_statistic(value: float) -> str:
    if value is None or np.isnan(value):
        return "–"
    return f"{value:.2f}" if np.isfinite(value) else ("inf" if value > 0 else "-inf")


def printable(frame: pd.DataFrame) -> pd.DataFrame:
    """The table as strings, formatted for a paper. A table that mixes masking modes or sides says which row is
    which in a `Mask` column (the same head appears once per mode and side)."""
    out = pd.DataFrame({
        "condition": frame["condition"],
        "mask": [f"{mode}, {side}" for mode, side in zip(frame["mode"], frame["side"])],
        "delta_mrr": [format_number(v) for v in frame["delta_mrr"]],
        "ci": [f"[{format_number(lo)}, {format_number(hi)}]" for lo, hi in zip(frame["ci_low"], frame["ci_high"])],
        "t_stat": [format_statistic(v) for v in frame["t_stat"]],
        "p_value": [format_p(v) for v in frame["p_value"]],
        "p_perm": [format_p(v) for v in frame["p_perm"]],
        "p_adjusted": [format_p(v) for v in frame["p_adjusted"]],
        "cohens_d": [format_statistic(v) for v in frame["cohens_d"]],
        "grad_score": [f"{v:.3g}" if pd.notna(v) else "–" for v in frame["grad_score"]],
        "significant": ["*" if s else "" for s in frame["significant"]],
    })
    mixed = out["mask"].nunique() > 1
    printed = [(c, h) for c, h in PRINTED if mixed or c != "mask"]
    return out[[c for c, _ in printed]].rename(columns=dict(printed))


def to_markdown(frame: pd.DataFrame, caption: str) -> str:
    return markdown_table(printable(frame), caption)


def markdown_table(printed: pd.DataFrame, caption: str) -> str:
    """A table of strings (its columns the headers) under its caption."""
    return f"{caption}\n\n" + printed.to_markdown(index=False, disable_numparse=True) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """Text as LaTeX prints it literally (a model path may hold any of & % $ # _ { } ~ ^ \\)."""
    escaped = "".join(_LATEX_SPECIAL.get(char, char) for char in str(text))
    return escaped.replace("Δ", r"$\Delta$").replace("×", r"$\times$")


def to_latex(frame: pd.DataFrame, caption: str, label: str = "tab:head-importance") -> str:
    return latex_table(printable(frame), caption, label)


def latex_table(printed: pd.DataFrame, caption: str, label: str) -> str:
    """A table of strings as a booktabs table with its caption and label."""
    table = printed.rename(columns=latex_escape).map(latex_escape)
    body = table.style.hide(axis="index").to_latex(hrules=True, column_format="l" + "r" * (table.shape[1] - 1))
    return ("% needs \\usepackage{booktabs}\n\\begin{table}[t]\n\\centering\n\\small\n" + body
            + f"\\caption{{{latex_escape(caption)}}}\n\\label{{{label}}}\n\\end{{table}}\n")
