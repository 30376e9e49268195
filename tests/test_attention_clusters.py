"""attention/clusters.py and attention/plots.py: planted clusters found again, c-TF-IDF and the domain test against
hand computations, maps from given Jensen-Shannon distances, every figure written, bad settings refused."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy.cluster.hierarchy import fcluster
from scipy.spatial.distance import pdist, squareform
from scipy.stats import chi2_contingency

from attention import plots
from attention.clusters import cluster_examples, cluster_heads, cluster_terms, domain_test
from attention.settings import CONSTRUCTS, STATISTICS
from codesearch.errors import UserError
from heads.naming import every_head

N_LAYERS, N_HEADS = 4, 6
HEAD_NAMES = [head.name for head in every_head(N_LAYERS, N_HEADS)]
HEAD_BLOBS = np.arange(len(HEAD_NAMES)) % 3           # not aligned with layers
WORDS = ("sort", "parse", "download")                   # one planted query word per example group


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renaming the labels: the pairs (a, b) are a one-to-one map."""
    pairs = set(zip(np.asarray(a).tolist(), np.asarray(b).tolist()))
    return len(pairs) == len(set(np.asarray(a).tolist())) == len(set(np.asarray(b).tolist()))


def blobs(groups: np.ndarray, dims: int, seed: int, spread: float = 10.0, noise: float = 0.3) -> np.ndarray:
    """[n, dims] points around one random centre per group, centres far apart."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, spread, size=(groups.max() + 1, dims))
    return centres[groups] + rng.normal(0, noise, size=(len(groups), dims))


def head_features() -> pd.DataFrame:
    """Five statistics with three planted blobs of heads; one statistic NaN everywhere, one NaN for one head."""
    frame = pd.DataFrame(blobs(HEAD_BLOBS, 5, seed=1), index=HEAD_NAMES, columns=list(STATISTICS[:5]))
    frame[STATISTICS[5]] = np.nan
    frame[STATISTICS[6]] = 1.0
    frame.loc["L2H3", STATISTICS[6]] = np.nan
    return frame


@pytest.fixture(scope="module")
def planar():
    """Heads placed in a plane (three blobs); their Euclidean distances stand for JS distances."""
    positions = blobs(HEAD_BLOBS, 2, seed=2, spread=1.0, noise=0.05)
    return positions, squareform(pdist(positions))


@pytest.fixture(scope="module")
def heads_found():
    return cluster_heads(head_features(), None, k=0, max_k=8, seed=0)


@pytest.fixture(scope="module")
def heads_with_js(planar):
    return cluster_heads(head_features(), planar[1], k=4, max_k=6, seed=0)


def example_data(n_per_group: int = 12, seed: int = 3):
    groups = np.repeat(np.arange(3), n_per_group)
    vectors = blobs(groups, len(HEAD_NAMES), seed=seed)
    rng = np.random.default_rng(seed)
    fillers = ["the list of values", "a string from text", "records with names", "numbers into a file"]
    queries = [f"{WORDS[g]} {fillers[i % len(fillers)]}" for i, g in enumerate(groups)]
    meta = pd.DataFrame({"domain": np.array(["web", "ml", "db"])[groups],
                         "language": np.where(np.arange(len(groups)) % 2, "python", "go"),
                         **{name: rng.uniform(size=len(groups)) for name in CONSTRUCTS}})
    return groups, vectors, queries, meta


@pytest.fixture(scope="module")
def examples_found():
    groups, vectors, queries, meta = example_data()
    return groups, meta, cluster_examples(vectors, queries, meta, k=0, max_k=8, seed=0)


# -- heads

def test_planted_head_blobs_are_found(heads_found):
    assert heads_found.k == 3
    assert heads_found.chosen_by == "silhouette"
    assert same_partition(heads_found.labels, HEAD_BLOBS)


def test_chosen_k_has_the_best_silhouette(heads_found):
    elbow = heads_found.elbow()
    assert elbow["k"].tolist() == list(range(2, 9))
    assert elbow.loc[elbow["silhouette"].idxmax(), "k"] == heads_found.k


def test_statistics_with_nan_are_left_out_by_name(heads_found):
    assert heads_found.dropped_statistics == [STATISTICS[5], STATISTICS[6]]
    assert heads_found.statistics == list(STATISTICS[:5])


def test_head_frame(heads_found):
    frame = heads_found.frame()
    assert frame.columns.tolist() == ["condition", "layer", "head", "cluster", "pca_1", "pca_2", "tsne_1", "tsne_2",
                                      "mds_1", "mds_2"]
    assert frame["condition"].tolist() == HEAD_NAMES
    assert frame.loc[frame["condition"] == "L2H3", ["layer", "head"]].values.tolist() == [[2, 3]]
    assert frame[["mds_1", "mds_2"]].isna().all().all()          # no JS distances given
    assert np.isfinite(frame[["pca_1", "pca_2", "tsne_1", "tsne_2"]].to_numpy()).all()
    assert 0.5 < heads_found.explained_variance.sum() <= 1.0 + 1e-12


def test_given_k_is_used_and_on_the_elbow(heads_with_js):
    assert heads_with_js.k == 4
    assert heads_with_js.chosen_by == "setting"
    assert len(np.unique(heads_with_js.labels)) == 4
    assert heads_with_js.elbow()["k"].tolist() == [2, 3, 4, 5, 6]


def test_given_k_above_max_k_is_tried():
    result = cluster_heads(head_features(), None, k=5, max_k=3, seed=0)
    assert result.elbow()["k"].tolist() == [2, 3, 4, 5]
    assert len(np.unique(result.labels)) == 5


def test_mds_of_the_js_distances_keeps_them(heads_with_js, planar):
    # distances that are Euclidean in a plane are reproduced by a 2-D metric MDS
    np.testing.assert_allclose(pdist(heads_with_js.mds), squareform(planar[1]), atol=1e-3)
    frame = heads_with_js.frame()
    np.testing.assert_array_equal(frame[["mds_1", "mds_2"]].to_numpy(), heads_with_js.mds)


def test_linkage_of_the_js_distances_finds_the_blobs(heads_with_js):
    assert heads_with_js.linkage.shape == (len(HEAD_NAMES) - 1, 4)
    assert same_partition(fcluster(heads_with_js.linkage, 3, criterion="maxclust"), HEAD_BLOBS)


# -- examples

def test_planted_example_groups_are_found(examples_found):
    groups, _, result = examples_found
    assert result.k == 3
    assert same_partition(result.labels, groups)
    assert result.dropped_examples == 0


def test_each_cluster_is_described(examples_found):
    groups, meta, result = examples_found
    table = result.clusters()
    assert table.columns.tolist()[:5] == ["cluster", "size", "top_terms", "domains", "languages"]
    assert table.columns.tolist()[5:] == [f"share_{name}" for name in CONSTRUCTS]
    for _, row in table.iterrows():
        group = groups[result.labels == row["cluster"]][0]
        assert row["size"] == 12
        assert row["top_terms"].split("; ")[0] == WORDS[group]       # the planted word leads
        assert row["domains"] == f"{['web', 'ml', 'db'][group]}=12"
        assert row["languages"] == "go=6; python=6"
        expected = meta.loc[groups == group, "loop"].mean()
        assert row["share_loop"] == pytest.approx(expected, abs=1e-12)


def test_domains_aligned_with_clusters_give_v_of_one(examples_found):
    test = examples_found[2].chi_square()
    assert test["cramers_v"] == pytest.approx(1.0)
    assert test["dof"] == 4
    assert test["n"] == 36


def test_examples_with_nan_are_left_out_and_counted():
    groups, vectors, queries, meta = example_data()
    vectors[[0, 20], 5] = np.nan
    result = cluster_examples(vectors, queries, meta, seed=0)
    assert result.dropped_examples == 2
    assert result.labels[[0, 20]].tolist() == [-1, -1]
    assert np.isnan(result.coordinates[[0, 20]]).all()
    assert np.isfinite(np.delete(result.coordinates, [0, 20], axis=0)).all()
    keep = np.ones(len(groups), dtype=bool)
    keep[[0, 20]] = False
    assert same_partition(result.labels[keep], groups[keep])
    assert result.clusters()["size"].sum() == len(groups) - 2


def test_a_feature_nan_for_every_example_is_left_out_not_every_example():
    groups, vectors, queries, meta = example_data()
    vectors[:, 3] = np.nan
    result = cluster_examples(vectors, queries, meta, seed=0)
    assert result.dropped_examples == 0
    assert result.dropped_features == 1
    assert same_partition(result.labels, groups)


def test_class_tfidf_by_hand():
    # cluster 0: sort x2, list, array (4 words; "a", "the" are stop words); cluster 1: read, list, open (3 words;
    # "x" has one letter, "42" none). A = 3.5 (not cut to an integer); f: sort 2, list 2, array 1, read 1, open 1.
    queries = ["sort a list", "sort the array", "read a list", "open x 42"]
    terms = cluster_terms(queries, np.array([0, 0, 1, 1]), top=8)
    expected = {0: [("sort", 2 / 4 * math.log(1 + 3.5 / 2)), ("array", 1 / 4 * math.log(1 + 3.5 / 1)),
                    ("list", 1 / 4 * math.log(1 + 3.5 / 2))],
                1: [("open", 1 / 3 * math.log(1 + 3.5 / 1)), ("read", 1 / 3 * math.log(1 + 3.5 / 1)),
                    ("list", 1 / 3 * math.log(1 + 3.5 / 2))]}    # open and read tie: by term
    for cluster in (0, 1):
        assert [term for term, _ in terms[cluster]] == [term for term, _ in expected[cluster]]
        np.testing.assert_allclose([w for _, w in terms[cluster]], [w for _, w in expected[cluster]], rtol=1e-12)


def test_top_terms_are_cut():
    terms = cluster_terms(["sort a list", "sort the array", "read a list", "open x 42"], np.array([0, 0, 1, 1]), top=1)
    assert [[term for term, _ in terms[c]] for c in (0, 1)] == [["sort"], ["open"]]


def test_domain_test_equals_scipy_on_a_table_built_here():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, size=90)
    domains = rng.choice(["web", "ml", "db", ""], size=90, p=[0.4, 0.3, 0.2, 0.1])
    names = sorted(set(domains) - {""})
    table = np.array([[np.sum((labels == c) & (domains == d)) for d in names] for c in range(3)])
    statistic, p, dof, _ = chi2_contingency(table, correction=False)
    n = table.sum()
    result = domain_test(labels, domains)
    assert result["statistic"] == pytest.approx(statistic, rel=1e-12)
    assert result["p_value"] == pytest.approx(p, rel=1e-12)
    assert result["dof"] == dof == 4
    assert result["n"] == n == np.sum(domains != "")
    assert result["cramers_v"] == pytest.approx(math.sqrt(statistic / (n * (min(table.shape) - 1))), rel=1e-12)


def test_domain_test_on_a_two_by_two_table_has_no_yates_correction():
    labels = np.array([0] * 10 + [1] * 10)
    domains = np.array(["web"] * 8 + ["ml"] * 2 + ["web"] * 3 + ["ml"] * 7)
    table = np.array([[2, 8], [7, 3]])    # rows cluster 0, 1; columns ml, web
    statistic = chi2_contingency(table, correction=False)[0]
    result = domain_test(labels, domains)
    assert result["statistic"] == pytest.approx(statistic, rel=1e-12)
    assert result["cramers_v"] == pytest.approx(math.sqrt(statistic / 20), rel=1e-12)


@pytest.mark.parametrize("domains", [["web"] * 6 + [""] * 2, [""] * 8])
def test_no_domain_test_without_two_domains(domains):
    result = domain_test(np.array([0, 0, 1, 1, 2, 2, 0, 1]), np.array(domains))
    assert set(result) == {"reason"}
    assert "fewer than 2 domains" in result["reason"]
    assert "2 of 8 examples have no domain" in result["reason"] or "8 of 8" in result["reason"]


# -- errors

def test_more_clusters_than_heads_allow_is_refused():
    with pytest.raises(UserError, match=r"attention.clusters=24 needs at least 25 heads; there are 24"):
        cluster_heads(head_features(), None, k=24)


def test_too_few_examples_are_refused_saying_how_many_had_nan():
    _, vectors, queries, meta = example_data(n_per_group=2)
    vectors[:4, 0] = np.nan
    with pytest.raises(UserError, match=r"attention.clusters=2 needs at least 3 examples; there are 2 \(4 of 6 "
                                        r"examples have NaN values"):
        cluster_examples(vectors, queries, meta, k=2)


@pytest.mark.parametrize(("k", "max_k", "message"), [(0, 1, "attention.max_clusters=1"),
                                                     (1, 8, "attention.clusters=1"),
                                                     (-2, 8, "attention.clusters=-2")])
def test_bad_cluster_settings_are_refused(k, max_k, message):
    with pytest.raises(UserError, match=message):
        cluster_heads(head_features(), None, k=k, max_k=max_k)
    _, vectors, queries, meta = example_data(n_per_group=3)
    with pytest.raises(UserError, match=message):
        cluster_examples(vectors, queries, meta, k=k, max_k=max_k)


def test_js_of_the_wrong_shape_is_refused(planar):
    with pytest.raises(UserError, match=r"Jensen-Shannon distances are \(23, 23\); the heads need \[24, 24\]"):
        cluster_heads(head_features(), planar[1][:23, :23])


def test_heads_without_any_complete_statistic_are_refused():
    features = head_features()
    features.loc["L0H0"] = np.nan
    with pytest.raises(UserError, match="no attention statistic has a value for every head"):
        cluster_heads(features)


# -- figures

def assert_written(paths, stems):
    assert sorted(p.name for p in paths) == sorted(f"{stem}{suffix}" for stem in stems for suffix in (".png", ".svg"))
    for path in paths:
        assert path.stat().st_size > 0


def test_head_maps_with_js_and_delta_mrr(heads_with_js, tmp_path):
    delta = pd.Series(np.linspace(-0.05, 0.02, len(HEAD_NAMES)), index=HEAD_NAMES).drop("L1H1")
    paths = plots.plot_head_maps(heads_with_js, tmp_path / "head_map", delta)
    assert_written(paths, ["head_map_pca", "head_map_tsne", "head_map_mds"])


def test_head_maps_without_js(heads_found, tmp_path):
    assert_written(plots.plot_head_maps(heads_found, tmp_path / "maps", None), ["maps_pca", "maps_tsne"])


def test_elbow_and_dendrogram(heads_with_js, tmp_path):
    assert_written(plots.plot_elbow(heads_with_js, tmp_path / "elbow"), ["elbow"])
    assert_written(plots.plot_dendrogram(heads_with_js, tmp_path / "dendrogram"), ["dendrogram"])


def test_example_clusters_figure(examples_found, tmp_path):
    assert_written(plots.plot_example_clusters(examples_found[2], tmp_path / "examples"), ["examples"])


def test_correlation_figure(tmp_path):
    x = pd.Series(np.arange(len(HEAD_NAMES), dtype=float), index=HEAD_NAMES)
    y = pd.Series(-0.001 * np.arange(len(HEAD_NAMES)), index=HEAD_NAMES)
    paths = plots.plot_correlation(x, y, "q2c_mass", "ΔMRR", -1.0, 1e-4, tmp_path / "correlation_q2c_mass")
    assert_written(paths, ["correlation_q2c_mass"])


def test_only_the_heads_that_stand_out_are_named_among_many():
    scores = np.arange(60, dtype=float)
    scores[10] = np.nan
    assert sorted(plots.standing_out(scores).tolist()) == list(range(48, 60))
    assert plots.standing_out(np.arange(5.0)).tolist() == [0, 1, 2, 3, 4]    # few heads: all named
