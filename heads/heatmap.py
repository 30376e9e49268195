"""Layer x head heatmaps of any per-head value (ΔMRR, probe selectivity, attention statistics)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from codesearch.files import atomic_write  # noqa: E402


def layer_head_matrix(frame: pd.DataFrame, column: str, n_layers: int, n_heads: int) -> np.ndarray:
    """[layers, heads] of `column` for the rows that name one head (`layer`, `head`); NaN for the others."""
    matrix = np.full((n_layers, n_heads), np.nan)
    singles = frame.dropna(subset=["layer", "head"])
    for _, row in singles.iterrows():
        matrix[int(row["layer"]), int(row["head"])] = row[column]
    return matrix


def plot_matrix(values: np.ndarray, title: str, label: str, stem: Path, diverging: bool = True,
                marked: np.ndarray | None = None, rows: list[str] | None = None, columns: list[str] | None = None,
                axes: tuple[str, str] = ("layer", "head")) -> list[Path]:
    """Write `<stem>.png` and `<stem>.svg` of a [layers, heads] matrix (cells show value x 100; `marked` cells
    are boxed and starred); any other matrix with its `rows` and `columns` named, and its `axes` (rows, columns).
    Returns the paths."""
    n_layers, n_heads = values.shape
    finite = np.isfinite(values)
    if diverging:
        limit = np.nanmax(np.abs(values)) if finite.any() else 1.0
        limit = limit if limit > 0 else 1.0
        vmin, vmax, cmap = -limit, limit, "RdBu"
    else:
        vmin, vmax, cmap = (np.nanmin(values), np.nanmax(values), "viridis") if finite.any() else (0, 1, "viridis")
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * n_heads, 1.2 + 0.55 * n_layers))
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    middle = (vmin + vmax) / 2
    half = (vmax - vmin) / 2 or 1.0
    for layer in range(n_layers):
        for head in range(n_heads):
            value = values[layer, head]
            if not np.isfinite(value):
                continue
            star = marked is not None and bool(marked[layer, head])
            ax.text(head, layer, f"{value * 100:+.1f}" + ("*" if star else ""), ha="center", va="center",
                    fontsize=7, fontweight="bold" if star else "normal",
                    color="white" if abs(value - middle) > 0.6 * half else "black")
            if star:
                ax.add_patch(plt.Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="black", lw=1.5))
    ax.set_xticks(range(n_heads), columns if columns is not None else range(n_heads),
                  rotation=90 if columns is not None else 0)
    ax.set_yticks(range(n_layers), rows if rows is not None else range(n_layers))
    ax.set_ylabel(axes[0])
    ax.set_xlabel(axes[1])
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax).set_label(label)
    fig.tight_layout()
    return save_figure(fig, stem)


def save_figure(fig, stem: Path) -> list[Path]:
    """`<stem>.png` and `<stem>.svg`, each written atomically; the figure is closed. Returns the paths."""
    paths = []
    for suffix in (".png", ".svg"):
        path = stem.with_suffix(suffix)
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=150, format=suffix[1:]))
        paths.append(path)
    plt.close(fig)
    return paths
