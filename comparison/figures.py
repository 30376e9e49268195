"""The pictures of a comparison besides the layer × head maps (`heads.heatmap`): a study × study matrix."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from codesearch.files import atomic_write  # noqa: E402


def plot_study_matrix(matrix: pd.DataFrame, title: str, label: str, stem: Path) -> list[Path]:
    """`<stem>.png` and `.svg` of a symmetric study × study matrix of correlations (cells show the value)."""
    n = len(matrix)
    values = matrix.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(2.5 + 1.1 * n, 1.8 + 0.9 * n))
    image = ax.imshow(values, cmap="RdBu", vmin=-1, vmax=1)
    for i in range(n):
        for j in range(n):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:+.2f}", ha="center", va="center", fontsize=8,
                        color="white" if abs(values[i, j]) > 0.6 else "black")
    ax.set_xticks(range(n), [str(name) for name in matrix.columns], rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(n), [str(name) for name in matrix.index], fontsize=7)
    ax.set_title(title, fontsize=9, pad=14)
    fig.colorbar(image, ax=ax).set_label(label)
    fig.tight_layout()
    paths = []
    for suffix in (".png", ".svg"):
        path = stem.with_suffix(suffix)
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=150, format=suffix[1:], bbox_inches="tight"))
        paths.append(path)
    plt.close(fig)
    return paths
