"""Clusters and 2-D maps of heads and of examples, as the original study drew them.

    heads = cluster_heads(features, js, k, max_k, seed)   # features: [heads, statistics]; js: [heads, heads]
    heads.frame()      # one row per head: condition, layer, head, cluster, pca_1..mds_2
    heads.elbow()      # k, inertia, silhouette
    examples = cluster_examples(vectors, queries, meta, k, max_k, seed)   # vectors: [examples, heads]
    examples.clusters()      # one row per cluster: size, c-TF-IDF terms, domains, languages, construct shares
    examples.chi_square()    # cluster against domain

Every step is scikit-learn's or scipy's (StandardScaler, PCA, TSNE, MDS, KMeans, silhouette_score,
CountVectorizer, linkage, chi2_contingency, association); only c-TF-IDF, which neither has, is written here.

Choices:
- k: `k` when given (0 = not given), else the k in 2..max_k (capped at n-1) with the best silhouette, the smallest
  on a tie. The elbow always covers 2..max(max_k, k), so a given k above max_k is still on the curve.
- Head statistics with a NaN or infinite value for any head (q2c_mass of code-only input) are left out, by name.
- Examples: feature columns that are NaN for every example are left out, then examples with any remaining NaN
  (e.g. a pair whose code was truncated away) are left out and counted (`dropped_examples`), not refused: the
  study's long pass is done by then. Their label is -1 and their coordinates NaN. Too few examples left is an
  error that says how many had NaN.
- The chi-square test uses the examples that have a domain; it runs without Yates' correction, so that the
  statistic and Cramér's V (scipy's `association`, uncorrected) agree: V^2 = chi2 / (n (min(r, c) - 1)).
- c-TF-IDF uses the mean words per cluster as a float (the paper's A; BERTopic's code truncates it to int).
- t-SNE runs its exact gradient up to EXACT_TSNE_MAX points (a model's heads): faster there than Barnes-Hut.
  MDS starts from classical MDS (scikit-learn >= 1.8; its coming default), so one run is deterministic.
"""
from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform
from scipy.stats import chi2_contingency
from scipy.stats.contingency import association
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.manifold import MDS, TSNE
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler, normalize

from codesearch.errors import UserError
from heads.naming import HeadId, parse_head_name

from .settings import CONSTRUCTS

MIN_K = 2
MAX_EXAMPLE_COMPONENTS = 10
EXACT_TSNE_MAX = 1000         # points up to which t-SNE runs its exact gradient (O(n^2) memory and time)
TERM_PATTERN = r"(?u)\b[^\W\d_]{2,}\b"      # words of 2+ letters: no numbers, no one-letter tokens
NO_DOMAIN = "(none)"


# -- k-means over a range of k

@dataclass(kw_only=True)
class KMeansResult:
    """k-means for every k tried (the elbow and the silhouettes) and the labels of the chosen k."""
    inertia: dict[int, float]           # k -> within-cluster sum of squares
    silhouette: dict[int, float]        # k -> mean silhouette (NaN where k-means found fewer than 2 clusters)
    k: int
    chosen_by: str                      # "setting" (attention.clusters) or "silhouette"
    labels: np.ndarray                  # [n] cluster of each point, 0..k-1 (-1: left out)

    def elbow(self) -> pd.DataFrame:
        """One row per k tried: k, inertia, silhouette."""
        return pd.DataFrame({"k": list(self.inertia), "inertia": list(self.inertia.values()),
                             "silhouette": [self.silhouette[k] for k in self.inertia]})


def check_clusters(n: int, k: int, max_k: int, what: str, note: str = "") -> None:
    """Refuse settings that cannot give clusters of `n` points (`what` names them: heads, examples)."""
    if max_k < MIN_K:
        raise UserError(f"attention.max_clusters={max_k}: at least {MIN_K} clusters are tried; set it to "
                        f"{MIN_K} or more")
    if k < 0 or k == 1:
        raise UserError(f"attention.clusters={k}: give 0 (k chosen by silhouette) or {MIN_K} or more")
    needed = k + 1 if k else MIN_K + 1   # a silhouette needs a point more than there are clusters
    if n < needed:
        setting = f"attention.clusters={k}" if k else "attention.clusters=0 (k chosen by silhouette from 2)"
        raise UserError(f"{setting} needs at least {needed} {what}; there are {n}{note}")


def kmeans_sweep(points: np.ndarray, k: int, max_k: int, seed: int) -> KMeansResult:
    """k-means (n_init=10) of [n, d] points for k in 2..max(max_k, k), capped at n-1; the chosen k is `k` when given
    (non-zero), else the best silhouette (the smallest k on a tie)."""
    n = len(points)
    top = min(max(max_k, k), n - 1)
    inertia, silhouette, labels = {}, {}, {}
    for candidate in range(MIN_K, top + 1):
        model = KMeans(n_clusters=candidate, n_init=10, random_state=seed).fit(points)
        inertia[candidate] = float(model.inertia_)
        labels[candidate] = model.labels_.astype(int)
        # identical points can leave k-means with one cluster, where no silhouette exists
        found = len(np.unique(model.labels_))
        silhouette[candidate] = float(silhouette_score(points, model.labels_)) if 1 < found < n else np.nan
    if k:
        chosen, by = k, "setting"
    else:
        scores = np.array(list(silhouette.values()))
        chosen = list(silhouette)[int(np.nanargmax(scores))] if np.isfinite(scores).any() else MIN_K
        by = "silhouette"
    return KMeansResult(inertia=inertia, silhouette=silhouette, k=chosen, chosen_by=by, labels=labels[chosen])


def _result_fields(result: KMeansResult) -> dict:
    return {f.name: getattr(result, f.name) for f in fields(KMeansResult)}


# -- projections

def pca_scores(points: np.ndarray, n_components: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[n, n_components] PCA scores and their explained variance ratios; components the data cannot give (fewer
    features or points) are zero, as a component of no variance would be."""
    fitted = min(n_components, points.shape[1], len(points))
    pca = PCA(n_components=fitted, random_state=seed)
    scores = np.zeros((len(points), n_components))
    scores[:, :fitted] = pca.fit_transform(points)
    ratio = np.zeros(n_components)
    ratio[:fitted] = pca.explained_variance_ratio_
    return scores, ratio


def tsne_map(points: np.ndarray, seed: int) -> np.ndarray:
    """[n, 2] t-SNE of [n, d] points, perplexity min(30, (n-1)/3), exact up to EXACT_TSNE_MAX points."""
    perplexity = min(30.0, (len(points) - 1) / 3)
    init = "pca" if points.shape[1] >= 2 else "random"   # a PCA start needs 2 features
    # for a model's few hundred heads the exact gradient is the faster (here 3 s against 30 s for 144 heads)
    method = "exact" if len(points) <= EXACT_TSNE_MAX else "barnes_hut"
    return TSNE(n_components=2, perplexity=perplexity, random_state=seed, init=init,
                method=method).fit_transform(points)


def _mds_model(seed: int) -> MDS:
    # scikit-learn 1.8 renamed `dissimilarity` to `metric` (and `metric` to `metric_mds`); the project allows >=1.5
    if "metric_mds" in inspect.signature(MDS).parameters:
        return MDS(n_components=2, metric="precomputed", init="classical_mds", random_state=seed,
                   normalized_stress="auto")
    return MDS(n_components=2, dissimilarity="precomputed", random_state=seed, normalized_stress="auto")


def mds_map(distances: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """[n, 2] metric MDS of an [n, n] distance matrix, and its stress."""
    model = _mds_model(seed)
    return model.fit_transform(distances), float(model.stress_)


def checked_distances(js: np.ndarray, n: int) -> np.ndarray:
    """The [n, n] Jensen-Shannon distances, checked, made exactly symmetric with a zero diagonal (averaging in
    floating point may leave differences in the last bit, which squareform refuses)."""
    js = np.asarray(js, dtype=float)
    if js.shape != (n, n):
        raise UserError(f"Jensen-Shannon distances are {js.shape}; the heads need [{n}, {n}]")
    if not np.isfinite(js).all() or (js < 0).any():
        raise UserError("Jensen-Shannon distances must be finite and non-negative; "
                        f"{int((~np.isfinite(js)).sum())} are not finite, {int((js < 0).sum())} negative")
    if not np.allclose(js, js.T, atol=1e-9) or not np.allclose(np.diag(js), 0, atol=1e-9):
        raise UserError("Jensen-Shannon distances must be symmetric with a zero diagonal")
    symmetric = (js + js.T) / 2
    np.fill_diagonal(symmetric, 0.0)
    return symmetric


# -- heads

@dataclass(kw_only=True)
class HeadClusters(KMeansResult):
    """Heads clustered and mapped by their standardised statistics (and their Jensen-Shannon distances)."""
    heads: list[HeadId]                     # [n_heads], flat order as given
    statistics: list[str]                   # the statistics used
    dropped_statistics: list[str]           # left out: NaN for some head
    pca: np.ndarray                         # [n_heads, 2]
    explained_variance: np.ndarray          # [2] PCA explained variance ratio
    tsne: np.ndarray                        # [n_heads, 2]
    mds: np.ndarray | None = None           # [n_heads, 2] from the JS distances
    mds_stress: float | None = None
    linkage: np.ndarray | None = None       # [n_heads - 1, 4] average linkage of the JS distances

    @property
    def names(self) -> list[str]:
        return [head.name for head in self.heads]

    def frame(self) -> pd.DataFrame:
        """One row per head: condition, layer, head, cluster, pca_1, pca_2, tsne_1, tsne_2, mds_1, mds_2 (NaN
        without JS distances)."""
        mds = self.mds if self.mds is not None else np.full((len(self.heads), 2), np.nan)
        return pd.DataFrame({
            "condition": self.names, "layer": [h.layer for h in self.heads], "head": [h.index for h in self.heads],
            "cluster": self.labels, "pca_1": self.pca[:, 0], "pca_2": self.pca[:, 1], "tsne_1": self.tsne[:, 0],
            "tsne_2": self.tsne[:, 1], "mds_1": mds[:, 0], "mds_2": mds[:, 1]})


def usable_statistics(features: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The columns with a finite value for every head, and the names of the others."""
    values = features.apply(pd.to_numeric, errors="coerce").astype(float)
    finite = np.isfinite(values.to_numpy()).all(axis=0)
    return values.loc[:, finite], [str(name) for name in values.columns[~finite]]


def cluster_heads(features: pd.DataFrame, js: np.ndarray | None = None, k: int = 0, max_k: int = 8,
                  seed: int = 0) -> HeadClusters:
    """Cluster and map heads. `features`: [n_heads, statistics], index = head names (`L3H7`) in flat order;
    `js`: [n_heads, n_heads] mean Jensen-Shannon distances, or None."""
    heads = [parse_head_name(str(name)) for name in features.index]
    check_clusters(len(heads), k, max_k, "heads")
    used, dropped = usable_statistics(features)
    if used.shape[1] == 0:
        raise UserError(f"no attention statistic has a value for every head (NaN somewhere: {', '.join(dropped)}); "
                        "nothing to cluster heads by")
    points = StandardScaler().fit_transform(used.to_numpy())
    pca, ratio = pca_scores(points, 2, seed)
    result = HeadClusters(**_result_fields(kmeans_sweep(points, k, max_k, seed)), heads=heads,
                          statistics=[str(c) for c in used.columns], dropped_statistics=dropped, pca=pca,
                          explained_variance=ratio, tsne=tsne_map(points, seed))
    if js is not None:
        distances = checked_distances(js, len(heads))
        result.mds, result.mds_stress = mds_map(distances, seed)
        result.linkage = linkage(squareform(distances), method="average")
    return result


# -- examples

@dataclass(kw_only=True)
class ExampleClusters(KMeansResult):
    """Examples clustered by their standardised per-head vectors (k-means on PCA scores), each cluster described.
    Arrays over examples keep every example; a left-out one (NaN vector) has label -1 and NaN coordinates."""
    kept: np.ndarray                        # [n_examples] bool: clustered
    coordinates: np.ndarray                 # [n_examples, 2] the first two PCA scores
    explained_variance: np.ndarray          # [n_components] PCA explained variance ratio
    dropped_features: int                   # vector columns NaN for every example
    terms: dict[int, list[tuple[str, float]]]   # cluster -> (term, c-TF-IDF weight), best first
    domains: dict[int, dict[str, int]]      # cluster -> domain -> examples ("(none)" for no domain)
    languages: dict[int, dict[str, int]]
    shares: pd.DataFrame                    # [clusters, constructs] mean share of code tokens per construct
    test: dict = field(default_factory=dict)

    @property
    def dropped_examples(self) -> int:
        return int((~self.kept).sum())

    def clusters(self) -> pd.DataFrame:
        """One row per cluster: cluster, size, top_terms ("; "-joined), domains, languages ("name=count; ..."),
        share_<construct> for each construct."""
        rows = []
        for cluster in range(self.k):
            row = {"cluster": cluster, "size": int((self.labels == cluster).sum()),
                   "top_terms": "; ".join(term for term, _ in self.terms.get(cluster, [])),
                   "domains": _counts_text(self.domains.get(cluster, {})),
                   "languages": _counts_text(self.languages.get(cluster, {}))}
            for name in self.shares.columns:
                row[f"share_{name}"] = float(self.shares.at[cluster, name]) if cluster in self.shares.index else np.nan
            rows.append(row)
        return pd.DataFrame(rows)

    def chi_square(self) -> dict:
        """Cluster against domain: statistic, p_value, dof, cramers_v, n (examples with a domain),
        share_expected_below_5; or reason, when there is no test."""
        return dict(self.test)


def _counts_text(counts: dict[str, int]) -> str:
    return "; ".join(f"{name}={count}" for name, count in counts.items())


def finite_rows(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the columns that are not NaN for every example, and of the rows finite in all of those."""
    finite = np.isfinite(vectors)
    columns = finite.any(axis=0)
    rows = finite[:, columns].all(axis=1) if columns.any() else np.zeros(len(vectors), dtype=bool)
    return rows, columns


def cluster_terms(queries: list[str], labels: np.ndarray, top: int = 8) -> dict[int, list[tuple[str, float]]]:
    """Each cluster's `top` terms by class-based TF-IDF (BERTopic's c-TF-IDF): a cluster's queries joined into one
    document; weight of term t in cluster c = tf_{t,c} / words_c * log(1 + A / f_t), with A the mean words per
    cluster and f_t the term's count over all clusters. Counts come from CountVectorizer (words of 2+ letters,
    lowercase, English stop words removed). Best first; ties by term."""
    clusters = [int(c) for c in np.unique(labels)]
    documents = [" ".join(q for q, label in zip(queries, labels) if label == c) for c in clusters]
    vectorizer = CountVectorizer(token_pattern=TERM_PATTERN, lowercase=True, stop_words="english")
    try:
        counts = vectorizer.fit_transform(documents).toarray().astype(float)   # [clusters, terms]
    except ValueError:   # no term at all (empty or stop-word-only queries)
        return {c: [] for c in clusters}
    weights = class_tfidf(counts)
    vocabulary = vectorizer.get_feature_names_out()
    out = {}
    for row, cluster in enumerate(clusters):
        present = [(str(vocabulary[j]), float(weights[row, j])) for j in np.flatnonzero(counts[row])]
        out[cluster] = sorted(present, key=lambda pair: (-pair[1], pair[0]))[:top]
    return out


def class_tfidf(counts: np.ndarray) -> np.ndarray:
    """[clusters, terms] term counts -> c-TF-IDF weights of the same shape (see `cluster_terms`)."""
    tf = normalize(counts, norm="l1", axis=1)           # tf_{t,c} / words_c
    average = counts.sum(axis=1).mean()                 # A
    frequency = counts.sum(axis=0)                      # f_t, > 0 for every term of the vocabulary
    return tf * np.log1p(average / frequency)


def domain_test(labels: np.ndarray, domains: np.ndarray) -> dict:
    """Chi-square test of independence of cluster and domain over the examples with a domain ("" = none), with
    Cramér's V; {"reason": ...} when fewer than 2 domains or clusters remain."""
    labels, domains = np.asarray(labels), np.asarray(domains, dtype=str)
    have = domains != ""
    table = pd.crosstab(labels[have], domains[have])     # only observed rows and columns: no zero margins
    missing = f"; {int((~have).sum())} of {len(domains)} examples have no domain" if (~have).any() else ""
    if table.shape[1] < 2:
        found = ", ".join(table.columns) or "none"
        return {"reason": f"fewer than 2 domains among the clustered examples (found: {found}){missing}"}
    if table.shape[0] < 2:
        return {"reason": f"the examples with a domain all fall in one cluster{missing}"}
    observed = table.to_numpy()
    result = chi2_contingency(observed, correction=False)
    return {"statistic": float(result.statistic), "p_value": float(result.pvalue), "dof": int(result.dof),
            "cramers_v": float(association(observed, method="cramer", correction=False)),
            "n": int(observed.sum()), "share_expected_below_5": float((result.expected_freq < 5).mean())}


def _text_column(meta: pd.DataFrame, name: str) -> np.ndarray:
    if name not in meta:
        return np.full(len(meta), "", dtype=object)
    return meta[name].fillna("").astype(str).to_numpy()


def _make_up(labels: np.ndarray, values: np.ndarray) -> dict[int, dict[str, int]]:
    """cluster -> value -> count, most common first."""
    return {int(c): {(v or NO_DOMAIN): n for v, n in Counter(values[labels == c]).most_common()}
            for c in np.unique(labels)}


def construct_shares(labels: np.ndarray, meta: pd.DataFrame) -> pd.DataFrame:
    """[clusters, constructs] mean share of each construct's code tokens over a cluster's examples (the columns of
    `meta` named after attention.settings.CONSTRUCTS; NaN shares ignored)."""
    names = [name for name in CONSTRUCTS if name in meta]
    shares = meta[names].apply(pd.to_numeric, errors="coerce").astype(float)
    return shares.groupby(np.asarray(labels)).mean().rename_axis("cluster")


def cluster_examples(vectors: np.ndarray, queries: list[str], meta: pd.DataFrame, k: int = 0, max_k: int = 8,
                     seed: int = 0, top_terms: int = 8) -> ExampleClusters:
    """Cluster examples by their per-head vectors. `vectors`: [n_examples, n_features] (e.g. each head's
    q2c_mass); `queries`: [n_examples]; `meta`: [n_examples] rows with domain, language (may be "") and one share
    column per construct. Standardised, PCA to min(10, n_features, n_kept - 1) dims (2 at least), k-means
    on the scores."""
    vectors = np.asarray(vectors, dtype=float)
    n = len(vectors)
    if vectors.ndim != 2 or len(queries) != n or len(meta) != n:
        raise ValueError(f"vectors {vectors.shape}, {len(queries)} queries and {len(meta)} meta rows must agree "
                         "on the examples")
    kept, columns = finite_rows(vectors)
    nan_rows = n - int(kept.sum())
    note = f" ({nan_rows} of {n} examples have NaN values and are left out)" if nan_rows else ""
    check_clusters(int(kept.sum()), k, max_k, "examples", note)
    points = StandardScaler().fit_transform(vectors[kept][:, columns])
    # at least 2 components for the map: with one feature the second is zero (see pca_scores)
    dims = max(2, min(MAX_EXAMPLE_COMPONENTS, points.shape[1], len(points) - 1))
    scores, ratio = pca_scores(points, dims, seed)
    sweep = kmeans_sweep(scores, k, max_k, seed)
    labels = sweep.labels
    kept_meta = meta.reset_index(drop=True).loc[kept]
    domains = _text_column(kept_meta, "domain")
    full_labels = np.full(n, -1)
    full_labels[kept] = labels
    coordinates = np.full((n, 2), np.nan)
    coordinates[kept] = scores[:, :2]
    sweep.labels = full_labels
    return ExampleClusters(
        **_result_fields(sweep), kept=kept, coordinates=coordinates, explained_variance=ratio,
        dropped_features=int((~columns).sum()),
        terms=cluster_terms([q for q, keep in zip(queries, kept) if keep], labels, top_terms),
        domains=_make_up(labels, domains), languages=_make_up(labels, _text_column(kept_meta, "language")),
        shares=construct_shares(labels, kept_meta), test=domain_test(labels, domains))
