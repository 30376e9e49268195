"""The files of a head-set study: each table as CSV, Markdown and LaTeX with its caption, the pruning curve with
its random band, the one-head-per-layer map and the K × K interaction map. Shared by `prune` and by `aggregate`
over prune runs, so both write the same files from the same ranks."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from codesearch.files import atomic_write_csv, atomic_write_text  # noqa: E402
from heads.heatmap import layer_head_matrix, plot_matrix, save_figure  # noqa: E402

from .head_sets import SetPlan  # noqa: E402
from .report import StudyFacts, describe_baseline, describe_test, masking  # noqa: E402
from .set_analysis import SetTables  # noqa: E402
from .settings import ReportSettings  # noqa: E402
from .table import format_number, format_p, format_statistic, latex_table, markdown_table  # noqa: E402

ORDER_COLOURS = {"exact": "tab:blue", "gradient": "tab:orange", "iterative": "tab:green"}


def _ci(low, high) -> str:
    return f"[{format_number(low)}, {format_number(high)}]"


def _order(order: str, seed) -> str:
    return f"{order} (seed {seed})" if pd.notna(seed) and order == "random" else order


def _mask_column(frame: pd.DataFrame, printed: pd.DataFrame) -> pd.DataFrame:
    """A `Mask` column first when the table mixes masking modes or sides."""
    masks = [f"{m}, {s}" for m, s in zip(frame["mode"], frame["side"])]
    if len(set(masks)) > 1:
        printed.insert(0, "Mask", masks)
    return printed


def printed_curve(curve: pd.DataFrame) -> pd.DataFrame:
    return _mask_column(curve, pd.DataFrame({
        "Order": [_order(o, s) for o, s in zip(curve["order"], curve["seed"])],
        "Pruned": [f"{n} ({f:.0%})" for n, f in zip(curve["n_pruned"], curve["fraction_pruned"])],
        "Heads added": [a if len(a) <= 40 else a[:37] + "..." for a in curve["added"].fillna("")],
        "MRR": [f"{v:.4f}" for v in curve["mrr"]],
        "of baseline": [f"{v:.1%}" for v in curve["relative_mrr"]],
        "ΔMRR": [format_number(v) for v in curve["delta_mrr"]],
        "95% CI": [_ci(lo, hi) for lo, hi in zip(curve["ci_low"], curve["ci_high"])],
        "p (adj.)": [format_p(v) for v in curve["p_adjusted"]],
        "sig.": ["*" if s else "" for s in curve["significant"]],
    }))


def printed_retention(retention: pd.DataFrame) -> pd.DataFrame:
    return _mask_column(retention, pd.DataFrame({
        "Order": [_order(o, s) if s != "mean" else f"{o} (mean of seeds)"
                  for o, s in zip(retention["order"], retention["seed"])],
        "Keeps": retention["criterion"],
        "Pruned": [f"{f:.1%} ({n} heads)" for n, f in zip(retention["n_pruned"], retention["fraction_pruned"])],
        "MRR there": [f"{v:.4f}" for v in retention["mrr"]],
        "Fails at": ["never" if pd.isna(v) else f"{v:.1%}" for v in retention["first_failing_fraction"]],
    }))


def printed_layers(layers: pd.DataFrame) -> pd.DataFrame:
    return _mask_column(layers, pd.DataFrame({
        "Layer": ["all" if pd.isna(v) else str(v) for v in layers["layer"]],
        "Kept": layers["kept"],
        "MRR": [f"{v:.4f}" for v in layers["mrr"]],
        "ΔMRR": [format_number(v) for v in layers["delta_mrr"]],
        "95% CI": [_ci(lo, hi) for lo, hi in zip(layers["ci_low"], layers["ci_high"])],
        "p (adj.)": [format_p(v) for v in layers["p_adjusted"]],
        "sig.": ["*" if s else "" for s in layers["significant"]],
        "best": ["best" if b else "" for b in layers["best"]],
    }))


def printed_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    return _mask_column(pairs, pd.DataFrame({
        "Pair": [f"{a} × {b}" for a, b in zip(pairs["a"], pairs["b"])],
        "drop a": [format_number(v) for v in pairs["drop_a"]],
        "drop b": [format_number(v) for v in pairs["drop_b"]],
        "drop a+b": [format_number(v) for v in pairs["drop_ab"]],
        "Interaction": [format_number(v) for v in pairs["interaction"]],
        "95% CI": [_ci(lo, hi) for lo, hi in zip(pairs["ci_low"], pairs["ci_high"])],
        "t": [format_statistic(v) for v in pairs["t_stat"]],
        "p": [format_p(v) for v in pairs["p_value"]],
        "p (perm.)": [format_p(v) for v in pairs["p_perm"]],
        "p (adj.)": [format_p(v) for v in pairs["p_adjusted"]],
        "Kind": pairs["kind"],
    }))


def printed_shapley(shapley: pd.DataFrame) -> pd.DataFrame:
    return _mask_column(shapley, pd.DataFrame({
        "Head": shapley["head"], "Rank": shapley["rank"].astype(str),
        "drop alone": [format_number(v) for v in shapley["drop_alone"]],
        "Shapley": [format_number(v) for v in shapley["shapley"]],
        "SE": [f"{v:.4f}" for v in shapley["se"]],
        "Permutations": [f"{n}{' (all)' if e else ''}" for n, e in zip(shapley["n_permutations"], shapley["exact"])],
    }))


def captions(facts: StudyFacts, settings: ReportSettings, k: int, shapley_exact: bool) -> dict[str, str]:
    test, correction = describe_test(settings)
    about = f"{facts.model} ({masking(facts)}), against the unmasked baseline ({describe_baseline(facts)})"
    tested = (f"95% CI of ΔMRR: paired bootstrap; p (adj.): {test}, {correction}-corrected over {{family}}; "
              f"* = significant at alpha = {settings.alpha}.")
    return {
        "curve": f"Pruning curves of {about}: heads masked cumulatively, least important first by each order. "
                 + tested.format(family="the distinct sets of all curves") + " 0 pruned is the baseline.",
        "retention": f"How much of {facts.model} can be pruned ({masking(facts)}): per order, the last measured point "
                     f"before MRR first falls below each share of the baseline MRR ({facts.baseline_mrr:.4f}), or "
                     f"before the first significant drop; `Fails at` is the next measured point.",
        "layers": f"One head per layer, {about}: in each layer every head but the one kept is masked (none: the "
                  f"whole layer); `all` keeps every layer's best head (chosen on these queries). "
                  + tested.format(family="all rows"),
        "interactions": f"Pairwise interactions of the top {k} heads of {about}: drop of MRR with both masked minus "
                        f"the drops of each alone (positive: redundant, negative: synergistic). 95% CI: paired "
                        f"bootstrap over queries; p (adj.): {test}, {correction}-corrected over the pairs; kind shown "
                        f"where significant at alpha = {settings.alpha}.",
        "shapley": f"Shapley values of the top heads of {about}: each head's mean marginal drop of MRR over "
                   + ("all permutations of the heads (exact)." if shapley_exact else
                      "randomly sampled permutations of the heads; SE: the standard error of that mean (sampled, "
                      "not exact).") + " The values sum to the drop with all of them masked.",
    }


TABLES = {"curve": printed_curve, "retention": printed_retention, "layers": printed_layers,
          "interactions": printed_pairs, "shapley": printed_shapley}
FILE_STEMS = {"curve": "curve", "retention": "retention", "layers": "layer_heads", "interactions": "interactions",
              "shapley": "shapley"}


def write_set_report(out: Path, tables: SetTables | None, per_query: pd.DataFrame, plans: list[SetPlan],
                     facts: StudyFacts, settings: ReportSettings) -> list[str]:
    """per_query.csv, plan.json and, with `tables` (not for a shard), every table that has rows (CSV, Markdown,
    LaTeX) and the figures; returns the file names."""
    out = Path(out)
    atomic_write_csv(out / "per_query.csv", per_query)
    atomic_write_text(out / "plan.json", json.dumps([plan.as_dict() for plan in plans], indent=1) + "\n")
    files = ["per_query.csv", "plan.json"]
    if tables is None:
        return files
    top = max((len(plan.top) for plan in plans), default=0)
    text = captions(facts, settings, top, all(plan.shapley_exact for plan in plans if plan.shapley))
    frames = {"curve": tables.curve, "retention": tables.retention, "layers": tables.layers,
              "interactions": tables.pairs, "shapley": tables.shapley}
    for key, frame in frames.items():
        if frame.empty:
            continue
        stem = FILE_STEMS[key]
        printed = TABLES[key](frame)
        atomic_write_csv(out / f"{stem}.csv", frame)
        atomic_write_text(out / f"{stem}.md", markdown_table(printed, text[key]))
        atomic_write_text(out / f"{stem}.tex", latex_table(printed, text[key], f"tab:{stem.replace('_', '-')}"))
        files += [f"{stem}.csv", f"{stem}.md", f"{stem}.tex"]
    files += _figures(out, tables, plans, facts)
    return files


def _groups(frame: pd.DataFrame):
    """(suffix, facts' mode and side, rows) per way of masking: one figure each."""
    groups = list(frame.groupby(["mode", "side"], sort=True))
    for (mode, side), rows in groups:
        yield ("" if len(groups) == 1 else f"-{mode}-{side}"), (mode, side), rows


def _figures(out: Path, tables: SetTables, plans: list[SetPlan], facts: StudyFacts) -> list[str]:
    files = []
    shapes = {(p.mode, p.side): p for p in plans}
    for suffix, (mode, side), rows in _groups(tables.curve):
        group = replace(facts, modes=(mode,), sides=(side,))
        files += [p.name for p in plot_curves(rows, group, out / f"curve{suffix}")]
    for suffix, (mode, side), rows in _groups(tables.layers):
        plan = shapes[(mode, side)]
        kept = rows[rows["head"].notna()]
        values = layer_head_matrix(kept, "delta_mrr", plan.n_layers, plan.n_heads)
        best = layer_head_matrix(kept.assign(best=kept["best"].astype(float)), "best", plan.n_layers,
                                 plan.n_heads) == 1.0
        title = (f"{facts.model}: {mode} mask, {side}; baseline MRR {facts.baseline_mrr:.3f}\n"
                 f"cells: ΔMRR × 100 keeping only that head of its layer; boxed * = the layer's best")
        files += [p.name for p in plot_matrix(values, title, "ΔMRR (one head kept − baseline)",
                                              out / f"layer_heads{suffix}", diverging=True, marked=best)]
    for suffix, (mode, side), rows in _groups(tables.pairs):
        top = shapes[(mode, side)].top
        matrix = np.full((len(top), len(top)), np.nan)
        marked = np.zeros_like(matrix, dtype=bool)
        index = {head: i for i, head in enumerate(top)}
        for row in rows.itertuples():
            for i, j in ((index[row.a], index[row.b]), (index[row.b], index[row.a])):
                matrix[i, j], marked[i, j] = row.interaction, row.significant
        title = (f"{facts.model}: {mode} mask, {side}; interactions of the top {len(top)} heads\n"
                 f"cells: (drop together − drops alone) × 100; + redundant, − synergistic; boxed * = significant")
        files += [p.name for p in plot_matrix(matrix, title, "interaction (MRR)", out / f"interactions{suffix}",
                                              diverging=True, marked=marked, rows=top, columns=top,
                                              axes=("head", "head"))]
    return files


def plot_curves(curve: pd.DataFrame, facts: StudyFacts, stem: Path) -> list[Path]:
    """MRR against the fraction pruned: each order's line with its paired 95% band, the random orders as a band
    (lowest to highest seed) around their mean, and 95% of the baseline dotted."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    baseline = facts.baseline_mrr
    random = curve[curve["order"] == "random"]
    if len(random):
        band = random.groupby("fraction_pruned")["mrr"].agg(["min", "max", "mean"]).sort_index()
        seeds = random["seed"].nunique()
        ax.fill_between(band.index, band["min"], band["max"], color="0.8", label=f"random ({seeds} seeds): range")
        ax.plot(band.index, band["mean"], color="0.45", linestyle="--", label="random: mean")
    for order, rows in curve[curve["order"] != "random"].groupby("order", sort=False):
        rows = rows.sort_values("fraction_pruned")
        colour = ORDER_COLOURS.get(order)
        ax.fill_between(rows["fraction_pruned"], baseline + rows["ci_low"], baseline + rows["ci_high"],
                        color=colour, alpha=0.15, linewidth=0)
        ax.plot(rows["fraction_pruned"], rows["mrr"], marker="o", markersize=2.5, color=colour, label=order)
    ax.axhline(0.95 * baseline, color="black", linestyle=":", linewidth=1, label="95% of baseline MRR")
    ax.set_xlabel("fraction of heads pruned")
    ax.set_ylabel("MRR")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_title(f"{facts.model}: pruning curves ({masking(facts)})\nbaseline MRR {baseline:.3f}, "
                 f"{facts.n_queries} queries; shaded: paired 95% CI", fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return save_figure(fig, stem)
