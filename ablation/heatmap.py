"""A layer x head heatmap of ΔMRR with the significant heads marked."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def layer_head_matrix(frame: pd.DataFrame, column: str, n_layers: int, n_heads: int) -> np.ndarray:
    """[layers, heads] of `column` for the single-head rows; NaN where a head was not ablated."""
    matrix = np.full((n_layers, n_heads), np.nan)
    singles = frame.dropna(subset=["layer", "head"])
    for _, row in singles.iterrows():
        matrix[int(row["layer"]), int(row["head"])] = row[column]
    return matrix


def plot_heatmap(frame: pd.DataFrame, n_layers: int, n_heads: int, title: str, stem: Path) -> list[Path]:
    """Write `<stem>.png` and `<stem>.svg`; return their paths."""
    delta = layer_head_matrix(frame, "delta_mrr", n_layers, n_heads)
    significant = layer_head_matrix(frame.assign(significant=frame["significant"].astype(float)), "significant",
                                    n_layers, n_heads)
    limit = np.nanmax(np.abs(delta)) if np.isfinite(delta).any() else 1.0
    limit = limit if limit > 0 else 1.0
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * n_heads, 1.2 + 0.55 * n_layers))
    image = ax.imshow(delta, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for layer in range(n_layers):
        for head in range(n_heads):
            value = delta[layer, head]
            if np.isnan(value):
                continue
            marked = significant[layer, head] == 1.0
            ax.text(head, layer, f"{value * 100:+.1f}" + ("*" if marked else ""), ha="center", va="center",
                    fontsize=7, fontweight="bold" if marked else "normal",
                    color="white" if abs(value) > 0.6 * limit else "black")
            if marked:
                ax.add_patch(plt.Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="black", lw=1.5))
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    bar = fig.colorbar(image, ax=ax)
    bar.set_label("ΔMRR (ablated − baseline)")
    fig.tight_layout()
    paths = []
    for suffix in (".png", ".svg"):
        path = stem.with_suffix(suffix)
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, dpi=150, format=suffix[1:])
        tmp.replace(path)  # atomic, like every other result file
        paths.append(path)
    plt.close(fig)
    return paths
