"""Figures of an attention study's clusters and correlations, each written as `<stem>.png` and `<stem>.svg`.

    plot_head_maps(head_clusters, folder / "head_map", delta_mrr)   # head_map_pca, _tsne (, _mds)
    plot_elbow(head_clusters, folder / "elbow")
    plot_dendrogram(head_clusters, folder / "dendrogram")            # needs the JS distances
    plot_example_clusters(example_clusters, folder / "example_clusters")
    plot_correlation(x, y, "q2c_mass", "ΔMRR", rho, p, folder / "correlation_q2c_mass")

Head names are written beside every point when there are at most LABEL_ALL heads; beyond that only beside the
LABEL_FEW that stand out (farthest from the map's centre, largest |ΔMRR|, the correlation's outliers).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from scipy.cluster.hierarchy import dendrogram  # noqa: E402

from codesearch.files import atomic_write  # noqa: E402

from .clusters import ExampleClusters, HeadClusters  # noqa: E402

LABEL_ALL = 48
LABEL_FEW = 12
MARKERS = "osD^vP*Xph<>"     # one per head cluster (cycled beyond 12)


# -- files

def save_figure(fig, stem: Path) -> list[Path]:
    """Write `<stem>.png` and `<stem>.svg` atomically; returns the paths."""
    paths = []
    for suffix in (".png", ".svg"):
        path = Path(stem).with_suffix(suffix)
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=150, format=suffix[1:]))
        paths.append(path)
    return paths


@contextlib.contextmanager
def figure(*args, **kwargs):
    """plt.subplots, closed however the block ends (pyplot keeps every open figure)."""
    fig, axes = plt.subplots(*args, **kwargs)
    try:
        yield fig, axes
    finally:
        plt.close(fig)


def _k_text(result: HeadClusters | ExampleClusters) -> str:
    how = "set by attention.clusters" if result.chosen_by == "setting" else "best silhouette"
    return f"k={result.k} ({how})"


def _stem_with(stem_prefix: Path, part: str) -> Path:
    stem_prefix = Path(stem_prefix)
    return stem_prefix.with_name(f"{stem_prefix.name}_{part}")


# -- which points get a name

def standing_out(scores: np.ndarray, limit: int = LABEL_FEW) -> np.ndarray:
    """Indices of the `limit` largest finite scores (all indices when there are at most LABEL_ALL points)."""
    scores = np.asarray(scores, dtype=float)
    if len(scores) <= LABEL_ALL:
        return np.arange(len(scores))
    order = np.argsort(-np.where(np.isfinite(scores), scores, -np.inf), kind="stable")
    return order[:min(limit, int(np.isfinite(scores).sum()))]


def robust_distance(points: np.ndarray) -> np.ndarray:
    """[n] distance of each [n, d] point from the median, each axis scaled by its interquartile range."""
    points = np.asarray(points, dtype=float)
    spread = np.subtract(*np.nanpercentile(points, [75, 25], axis=0))
    spread = np.where(spread > 0, spread, 1.0)
    return np.sqrt((((points - np.nanmedian(points, axis=0)) / spread) ** 2).sum(axis=1))


def _name_points(ax, xy: np.ndarray, names: list[str], which: np.ndarray) -> None:
    size = 6 if len(which) <= LABEL_FEW else 5
    for i in which:
        ax.annotate(names[i], xy[i], xytext=(3, 3), textcoords="offset points", fontsize=size)


# -- head maps

def _clustered_scatter(ax, xy: np.ndarray, labels: np.ndarray, values: np.ndarray, cmap: str, norm: Normalize):
    """Points coloured by `values`, one marker per cluster; returns the last collection (for a colorbar)."""
    image = None
    for cluster in np.unique(labels):
        member = labels == cluster
        image = ax.scatter(xy[member, 0], xy[member, 1], c=values[member], cmap=cmap, norm=norm, s=28,
                           marker=MARKERS[int(cluster) % len(MARKERS)], edgecolors="black", linewidths=0.3,
                           label=f"cluster {cluster}")
    return image


def _head_map(clusters: HeadClusters, xy: np.ndarray, title: str, axis: str, stem: Path,
              delta_mrr: pd.Series | None) -> list[Path]:
    """One map of the heads: coloured by layer, and by ΔMRR beside it when given."""
    names = clusters.names
    layers = np.array([head.layer for head in clusters.heads], dtype=float)
    panels = 1 if delta_mrr is None else 2
    with figure(1, panels, figsize=(6.2 * panels, 5.4), squeeze=False) as (fig, axes):
        ax = axes[0, 0]
        image = _clustered_scatter(ax, xy, clusters.labels, layers, "viridis", Normalize(layers.min(),
                                                                                          max(layers.max(), 1)))
        fig.colorbar(image, ax=ax).set_label("layer")
        _name_points(ax, xy, names, standing_out(robust_distance(xy)))
        ax.legend(fontsize=6, loc="best", markerscale=0.8)
        ax.set_title(f"{title}: coloured by layer", fontsize=9)
        if delta_mrr is not None:
            delta = delta_mrr.reindex(names).to_numpy(dtype=float)
            ax = axes[0, 1]
            limit = np.nanmax(np.abs(delta)) if np.isfinite(delta).any() else 1.0
            limit = limit if limit > 0 else 1.0
            missing = ~np.isfinite(delta)
            ax.scatter(xy[missing, 0], xy[missing, 1], facecolors="none", edgecolors="grey", s=28, linewidths=0.6,
                       label="no ΔMRR")
            shown = ~missing
            image = _clustered_scatter(ax, xy[shown], clusters.labels[shown], delta[shown], "RdBu",
                                       Normalize(-limit, limit))
            if image is not None:
                fig.colorbar(image, ax=ax).set_label("ΔMRR (ablated − baseline)")
            _name_points(ax, xy, names, standing_out(np.abs(delta)))
            ax.set_title(f"{title}: coloured by ΔMRR", fontsize=9)
        for ax in axes[0]:
            ax.set_xlabel(f"{axis} 1")
            ax.set_ylabel(f"{axis} 2")
        fig.tight_layout()
        return save_figure(fig, stem)


def plot_head_maps(clusters: HeadClusters, stem_prefix: Path, delta_mrr: pd.Series | None = None) -> list[Path]:
    """The heads on their PCA, t-SNE and (with JS distances) MDS maps, written as `<stem_prefix>_pca`, `_tsne`,
    `_mds`; markers show the k-means clusters. `delta_mrr`: indexed by head name. Returns the paths."""
    ratio = clusters.explained_variance
    maps = [("pca", clusters.pca, f"PCA of {len(clusters.statistics)} statistics ({ratio[0]:.0%} + {ratio[1]:.0%} "
                                  "of variance)", "PC"),
            ("tsne", clusters.tsne, "t-SNE of the statistics", "t-SNE")]
    if clusters.mds is not None:
        maps.append(("mds", clusters.mds, f"MDS of the Jensen-Shannon distances (stress {clusters.mds_stress:.3g})",
                     "MDS"))
    paths = []
    for part, xy, title, axis in maps:
        paths += _head_map(clusters, xy, f"{title}, k={clusters.k}", axis, _stem_with(stem_prefix, part), delta_mrr)
    return paths


# -- choosing k

def plot_elbow(clusters: HeadClusters | ExampleClusters, stem: Path) -> list[Path]:
    """Inertia (left axis) and silhouette (right axis) against k, the chosen k marked."""
    elbow = clusters.elbow()
    with figure(figsize=(6, 4)) as (fig, ax):
        ax.plot(elbow["k"], elbow["inertia"], "o-", color="tab:blue")
        ax.set_xlabel("k (k-means clusters)")
        ax.set_ylabel("inertia (within-cluster sum of squares)", color="tab:blue")
        right = ax.twinx()
        right.plot(elbow["k"], elbow["silhouette"], "s--", color="tab:orange")
        right.set_ylabel("mean silhouette", color="tab:orange")
        ax.axvline(clusters.k, color="black", linestyle=":", linewidth=1)
        ax.set_xticks(elbow["k"])
        ax.set_title(f"Choosing k: {_k_text(clusters)}", fontsize=9)
        fig.tight_layout()
        return save_figure(fig, stem)


def plot_dendrogram(clusters: HeadClusters, stem: Path) -> list[Path]:
    """scipy's dendrogram of the heads' average-linkage clustering on their JS distances, leaves named."""
    if clusters.linkage is None:
        raise ValueError("plot_dendrogram needs head clusters computed with Jensen-Shannon distances")
    n = len(clusters.heads)
    with figure(figsize=(max(6.0, 0.14 * n), 4.5)) as (fig, ax):
        dendrogram(clusters.linkage, labels=clusters.names, ax=ax, leaf_font_size=6 if n <= LABEL_ALL else 4,
                   leaf_rotation=90)
        ax.set_ylabel("Jensen-Shannon distance (average linkage)")
        ax.set_title(f"Heads by the distance between their attention (average linkage, {n} heads)", fontsize=9)
        fig.tight_layout()
        return save_figure(fig, stem)


# -- examples

def plot_example_clusters(examples: ExampleClusters, stem: Path) -> list[Path]:
    """The clustered examples on their first two PCA components, one colour per cluster, its top terms in the
    legend."""
    xy, labels = examples.coordinates, examples.labels
    ratio = examples.explained_variance
    colours = plt.get_cmap("tab10")
    with figure(figsize=(7, 5.4)) as (fig, ax):
        for cluster in range(examples.k):
            member = labels == cluster
            terms = ", ".join(term for term, _ in examples.terms.get(cluster, [])[:3]) or "no terms"
            ax.scatter(xy[member, 0], xy[member, 1], s=14, color=colours(cluster % 10), alpha=0.8,
                       marker=MARKERS[(cluster // 10) % len(MARKERS)],
                       label=f"{cluster} (n={int(member.sum())}): {terms}")
        ax.legend(fontsize=6, loc="best")
        ax.set_xlabel(f"PC 1 ({ratio[0]:.0%} of variance)")
        ax.set_ylabel(f"PC 2 ({ratio[1]:.0%} of variance)")
        left_out = f", {examples.dropped_examples} left out (NaN)" if examples.dropped_examples else ""
        ax.set_title(f"Examples by their attention: {_k_text(examples)}, "
                     f"{int(examples.kept.sum())} examples{left_out}", fontsize=9)
        fig.tight_layout()
        return save_figure(fig, stem)


# -- correlation with importance

def plot_correlation(x: pd.Series, y: pd.Series, x_label: str, y_label: str, rho: float, p: float,
                     stem: Path) -> list[Path]:
    """Scatter of a per-head statistic `x` against importance `y` (both indexed by head name), the outlying heads
    named, Spearman's rho and its permutation p in the title."""
    pair = pd.concat([x.rename("x"), y.rename("y")], axis=1, join="inner").dropna()
    xy = pair.to_numpy(dtype=float)
    with figure(figsize=(6, 4.6)) as (fig, ax):
        ax.scatter(xy[:, 0], xy[:, 1], s=18, color="tab:blue", edgecolors="black", linewidths=0.3)
        _name_points(ax, xy, [str(name) for name in pair.index], standing_out(robust_distance(xy), LABEL_FEW // 2))
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.set_title(f"{x_label} against {y_label} over {len(pair)} heads\nSpearman ρ = {rho:+.3f}, "
                     f"permutation p = {p:.3g}", fontsize=9)
        fig.tight_layout()
        return save_figure(fig, stem)
