"""attention/inference.py: every number against scipy, statsmodels and sklearn called directly, per head in a plain
loop; planted effects found; degenerate inputs and bad input as documented."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score
from statsmodels.stats.anova import AnovaRM
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.oneway import anova_oneway

from attention import inference
from codesearch.errors import UserError

N, LAYERS, HEADS = 30, 2, 3
NAMES = ["L0H0", "L0H1", "L0H2", "L1H0", "L1H1", "L1H2"]


def rng(seed=0):
    return np.random.default_rng(seed)


def close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), rtol=1e-10,
                               atol=1e-14, equal_nan=True)


def corrected(pvalues, method, alpha=0.05):
    """multipletests over the tested rows only; NaN rows stay NaN and never significant."""
    pvalues = np.asarray(pvalues, dtype=float)
    adjusted, significant = np.full(len(pvalues), np.nan), np.zeros(len(pvalues), dtype=bool)
    tested = ~np.isnan(pvalues)
    adjusted[tested] = multipletests(pvalues[tested], alpha=alpha, method=method)[1]
    significant[tested] = adjusted[tested] < alpha
    return adjusted, significant


def check_family(frame, method, alpha=0.05):
    adjusted, significant = corrected(frame["p_value"], method, alpha)
    close(frame["p_adjusted"], adjusted)
    assert frame["significant"].tolist() == significant.tolist()


def check_heads(frame, repeats=1):
    assert frame["condition"].tolist() == NAMES * repeats
    assert frame["layer"].tolist() == [0, 0, 0, 1, 1, 1] * repeats
    assert frame["head"].tolist() == [0, 1, 2, 0, 1, 2] * repeats


# -- construct_enrichment


def enrichment_inputs(seed=0):
    r = rng(seed)
    share = {"loop": r.uniform(0.05, 0.4, N), "call": r.uniform(0.05, 0.4, N)}
    share["call"][[3, 7]] = 0.0          # no call tokens: left out
    share["loop"][5] = np.nan
    mass = {name: np.clip(s[:, None, None] + r.normal(0.02, 0.08, (N, LAYERS, HEADS)), 0, 1)
            for name, s in share.items()}
    mass["loop"][[0, 1], 1, 2] = np.nan
    return mass, share


def test_enrichment_matches_scipy_per_head_and_category():
    mass, share = enrichment_inputs()
    frame = inference.construct_enrichment(mass, share, "holm", 0.05)
    assert list(frame.columns) == inference.ENRICHMENT_COLUMNS
    assert len(frame) == 2 * LAYERS * HEADS
    check_heads(frame, repeats=2)
    assert frame["category"].tolist() == ["loop"] * 6 + ["call"] * 6
    row = 0
    for category in ("loop", "call"):
        for layer in range(LAYERS):
            for head in range(HEADS):
                m, s = mass[category][:, layer, head], share[category]
                keep = ~np.isnan(m) & ~np.isnan(s) & (s != 0)
                d = m[keep] - s[keep]
                test = stats.ttest_1samp(d, 0.0, alternative="greater")
                got = frame.iloc[row]
                close(got["mean_mass"], m[keep].mean())
                close(got["mean_share"], s[keep].mean())
                close(got["enrichment"], m[keep].mean() / s[keep].mean())
                close(got["mean_difference"], d.mean())
                close(got["t_stat"], test.statistic)
                close(got["p_value"], test.pvalue)
                close(got["cohens_d"], d.mean() / d.std(ddof=1))
                assert got["n"] == keep.sum()
                row += 1
    assert frame.loc[frame.category == "call", "n"].eq(N - 2).all()
    assert frame.loc[(frame.category == "loop") & (frame.condition == "L1H2"), "n"].item() == N - 3
    check_family(frame, "holm")


def test_enrichment_bh_correction():
    mass, share = enrichment_inputs(1)
    frame = inference.construct_enrichment(mass, share, "bh", 0.1)
    check_family(frame, "fdr_bh", 0.1)


def test_enrichment_finds_the_planted_head():
    r = rng(2)
    share = {"loop": r.uniform(0.1, 0.3, N), "return": r.uniform(0.1, 0.3, N)}
    mass = {}
    for name, s in share.items():
        noise = r.normal(0, 0.05, (N, LAYERS, HEADS))
        noise -= noise.mean(axis=0)               # null heads: mass equals share on average, exactly
        mass[name] = s[:, None, None] + noise
    mass["loop"][:, 1, 2] += 0.15                 # L1H2 attends to loops well above their share
    frame = inference.construct_enrichment(mass, share)
    hits = frame[frame.significant]
    assert hits[["category", "condition"]].values.tolist() == [["loop", "L1H2"]]
    assert hits["enrichment"].item() > 1.5
    assert hits["cohens_d"].item() > 2


def test_enrichment_degenerate_heads():
    share = {"keyword": np.full(N, 0.2)}
    mass = np.full((N, LAYERS, HEADS), 0.2)       # L0H0: all differences zero
    mass[:, 0, 1] = 0.5                           # L0H1: all +0.3
    mass[:, 0, 2] = 0.1                           # L0H2: all -0.1
    mass[1:, 1, 0] = np.nan                       # L1H0: one example left
    mass[:, 1, 1] = 0.2 + rng(3).normal(0, 0.05, N)   # L1H1 and L1H2: ordinary
    mass[:, 1, 2] = 0.2 + rng(4).normal(0, 0.05, N)
    frame = inference.construct_enrichment({"keyword": mass}, share).set_index("condition")
    assert frame.loc["L0H0", ["t_stat", "p_value", "cohens_d"]].tolist() == [0.0, 0.5, 0.0]
    assert frame.loc["L0H1", ["t_stat", "p_value", "cohens_d"]].tolist() == [np.inf, 0.0, np.inf]
    assert bool(frame.loc["L0H1", "significant"])
    assert frame.loc["L0H2", ["t_stat", "p_value", "cohens_d"]].tolist() == [-np.inf, 1.0, -np.inf]
    one = frame.loc["L1H0"]
    assert one["n"] == 1 and np.isnan(one["t_stat"]) and np.isnan(one["p_value"]) and np.isnan(one["cohens_d"])
    assert np.isnan(one["p_adjusted"]) and not one["significant"]
    close(one["enrichment"], 1.0)
    # The NaN row takes no part in the family: Holm over the five tested rows.
    tested = frame.drop(index="L1H0")
    close(tested["p_adjusted"], multipletests(tested["p_value"], method="holm")[1])


def test_enrichment_without_usable_examples():
    share = {"literal": np.zeros(N)}
    frame = inference.construct_enrichment({"literal": rng().uniform(size=(N, LAYERS, HEADS))}, share)
    assert frame["n"].eq(0).all()
    assert frame[["mean_mass", "enrichment", "p_value", "p_adjusted"]].isna().all().all()
    assert not frame["significant"].any()


@pytest.mark.parametrize("mass, share, message", [
    ({"nonsense": np.zeros((N, 2, 3))}, {"nonsense": np.ones(N)}, "unknown categories nonsense"),
    ({"loop": np.zeros((N, 2, 3))}, {"call": np.ones(N)}, "no share for loop"),
    ({"loop": np.zeros((N, 2, 3))}, {"loop": np.ones(N - 1)}, r"share\[loop\] has shape \(29,\)"),
    ({"loop": np.zeros((N, 6))}, {"loop": np.ones(N)}, r"mass\[loop\] has shape \(30, 6\)"),
    ({"loop": np.zeros((N, 2, 3)), "call": np.zeros((N, 2, 4))}, {"loop": np.ones(N), "call": np.ones(N)},
     "differ in shape"),
])
def test_enrichment_rejects_bad_input(mass, share, message):
    with pytest.raises(UserError, match=message):
        inference.construct_enrichment(mass, share)


def test_unknown_correction_and_alpha_are_user_errors():
    mass, share = enrichment_inputs()
    with pytest.raises(UserError, match="correction='bonferroni': choose holm or bh"):
        inference.construct_enrichment(mass, share, "bonferroni")
    with pytest.raises(UserError, match="alpha=1.5"):
        inference.compare_models(mass["loop"], mass["call"], "q2c_mass", alpha=1.5)


# -- layer_anova


def test_layer_anova_matches_anovarm_and_ttest_rel():
    r = rng(5)
    values = r.normal(0, 1, (N, 3, HEADS)) + r.normal(0, 1, (N, 1, 1)) + np.array([0.0, 0.3, 0.5])[None, :, None]
    values[4, 2, 1] = np.nan                      # one NaN head drops its example
    values[9, 0, :] = np.nan
    anova, pairs = inference.layer_anova(values)
    assert list(anova.columns) == inference.LAYER_ANOVA_COLUMNS
    assert list(pairs.columns) == inference.LAYER_PAIR_COLUMNS

    rows, kept = [], []
    for example in range(N):
        means = [values[example, layer].mean() for layer in range(3)]
        if not np.isnan(means).any():
            kept.append(means)
            rows += [{"subject": example, "level": f"layer{layer}", "y": means[layer]} for layer in range(3)]
    kept = np.array(kept)
    result = AnovaRM(pd.DataFrame(rows), "y", "subject", within=["level"]).fit().anova_table.iloc[0]
    got = anova.iloc[0]
    close(got["f_stat"], result["F Value"])
    close(got["p_value"], result["Pr > F"])
    assert (got["num_df"], got["den_df"]) == (result["Num DF"], result["Den DF"]) == (2, 2 * (N - 2 - 1))
    # For one within factor, partial eta squared = F df1 / (F df1 + df2): an independent check of the SS.
    f, df1, df2 = result["F Value"], result["Num DF"], result["Den DF"]
    close(got["partial_eta_squared"], f * df1 / (f * df1 + df2))
    assert (got["n"], got["n_excluded"], got["n_layers"]) == (N - 2, 2, 3)
    close(got["p_adjusted"], got["p_value"])
    assert got["significant"] == (got["p_value"] < 0.05)

    assert pairs[["layer_a", "layer_b"]].values.tolist() == [[0, 1], [0, 2], [1, 2]]
    for row, (a, b) in zip(pairs.itertuples(), [(0, 1), (0, 2), (1, 2)]):
        test = stats.ttest_rel(kept[:, b], kept[:, a])
        d = kept[:, b] - kept[:, a]
        close([row.mean_a, row.mean_b, row.mean_difference], [kept[:, a].mean(), kept[:, b].mean(), d.mean()])
        close([row.t_stat, row.p_value, row.cohens_d], [test.statistic, test.pvalue, d.mean() / d.std(ddof=1)])
        assert row.n == N - 2
    check_family(pairs, "holm")


def test_layer_anova_finds_the_planted_layer():
    r = rng(6)
    values = r.normal(0, 0.1, (N, 3, HEADS))
    values -= values.mean(axis=(0, 2), keepdims=True)     # layers 0 and 1 equal on average, exactly
    values[:, 2] += 0.3
    anova, pairs = inference.layer_anova(values)
    assert anova["significant"].item() and anova["partial_eta_squared"].item() > 0.5
    assert pairs.loc[pairs.significant, ["layer_a", "layer_b"]].values.tolist() == [[0, 2], [1, 2]]
    assert (pairs.loc[pairs.significant, "mean_difference"] > 0).all()


def test_layer_anova_degenerate():
    with pytest.raises(UserError, match="1 layer; the test needs at least 2"):
        inference.layer_anova(np.zeros((N, 1, HEADS)))
    values = rng(7).normal(size=(N, 2, HEADS))
    values[1:, 1, 0] = np.nan
    anova, pairs = inference.layer_anova(values)
    assert (anova["n"].item(), anova["n_excluded"].item()) == (1, N - 1)
    assert anova[["f_stat", "p_value", "partial_eta_squared", "p_adjusted"]].isna().all(axis=None)
    assert not anova["significant"].item() and np.isnan(pairs["p_value"].item())
    # Example effect plus layer effect, nothing else: no residual, F at its limit.
    example = rng(8).normal(size=(N, 1, 1))
    anova, pairs = inference.layer_anova(example + np.array([0.0, 0.5])[None, :, None] + np.zeros((1, 1, HEADS)))
    assert anova[["f_stat", "p_value", "partial_eta_squared"]].values.tolist() == [[np.inf, 0.0, 1.0]]
    assert pairs[["t_stat", "p_value"]].values.tolist() == [[np.inf, 0.0]]
    anova, pairs = inference.layer_anova(np.repeat(np.repeat(example, 2, axis=1), HEADS, axis=2))
    assert anova[["f_stat", "p_value", "partial_eta_squared"]].values.tolist() == [[0.0, 1.0, 0.0]]
    assert pairs[["t_stat", "p_value", "cohens_d"]].values.tolist() == [[0.0, 1.0, 0.0]]


# -- group_anova


def group_inputs():
    r = rng(9)
    groups = ["go"] * 12 + ["java"] * 10 + ["python"] * 7 + ["ruby"]      # ruby: one example, left out
    values = r.normal(0, 1, (N, LAYERS, HEADS))
    values[12:22, 0, 1] *= 6                      # L0H1: java spreads far more -> Levene p < 0.001 -> Welch
    values[12:22, 1, 2] *= 9                      # L1H2: Levene p between 0.01 and 0.05 -> Welch
    values[[0, 1], 1, 0] = np.nan
    return values, groups


def test_group_anova_matches_scipy_and_statsmodels():
    values, groups = group_inputs()
    frame = inference.group_anova(values, groups)
    assert list(frame.columns) == inference.GROUP_COLUMNS
    check_heads(frame)
    labels = np.array(groups)
    for row, (layer, head) in zip(frame.itertuples(), [(layer, head) for layer in range(2) for head in range(3)]):
        column = values[:, layer, head]
        samples = [column[(labels == g) & ~np.isnan(column)] for g in ("go", "java", "python")]
        levene = stats.levene(*samples, center="median").pvalue
        if levene < 0.05:
            result, test = anova_oneway(samples, use_var="unequal"), "welch"
        else:
            result, test = stats.f_oneway(*samples), "classic"
        pooled = np.concatenate(samples)
        between = sum(len(s) * (s.mean() - pooled.mean()) ** 2 for s in samples)
        close([row.levene_p, row.f_stat, row.p_value, row.eta_squared],
              [levene, result.statistic, result.pvalue, between / ((pooled - pooled.mean()) ** 2).sum()])
        assert (row.test, row.n_groups, row.n) == (test, 3, len(pooled))
    assert frame["test"].tolist() == ["classic", "welch", "classic", "classic", "classic", "welch"]
    assert 0.01 < frame.loc[5, "levene_p"] < 0.05 < frame.loc[3, "levene_p"] < 0.1    # the threshold is 0.05
    assert frame.set_index("condition").loc["L1H0", "n"] == N - 1 - 2
    check_family(frame, "fdr_bh")


def test_group_anova_finds_the_planted_head():
    r = rng(10)
    groups = ["a"] * 10 + ["b"] * 10 + ["c"] * 10
    values = r.normal(0, 1, (N, LAYERS, HEADS))
    for g in range(3):                            # every group exactly at 0 on every head ...
        values[g * 10:(g + 1) * 10] -= values[g * 10:(g + 1) * 10].mean(axis=0)
    values[10:20, 0, 2] += 2.0                    # ... but b on L0H2
    frame = inference.group_anova(values, groups, "holm")
    assert frame.loc[frame.significant, "condition"].tolist() == ["L0H2"]
    assert frame.loc[frame.significant, "eta_squared"].item() > 0.4


def test_group_anova_degenerate_heads():
    groups = ["a"] * 15 + ["b"] * 15
    values = rng(11).normal(0, 1, (N, LAYERS, HEADS))
    values[15:, 0, 0] = np.nan                    # L0H0: only group a left -> no test
    values[:15, 0, 1], values[15:, 0, 1] = 1.0, 2.0     # L0H1: no spread within groups, means differ
    values[:, 0, 2] = 3.0                         # L0H2: one value everywhere
    values[:15, 1, 0] = 5.0                       # L1H0: group a has no spread, b does; Levene says unequal
    values[15:, 1, 0] = 5.0 + rng(12).normal(0, 3, 15)
    frame = inference.group_anova(values, groups).set_index("condition")
    none = frame.loc["L0H0"]
    assert (none["test"], none["n_groups"], none["n"]) == ("none", 1, 15)
    assert np.isnan(none["p_value"]) and np.isnan(none["p_adjusted"]) and not none["significant"]
    assert frame.loc["L0H1", ["test", "f_stat", "p_value", "eta_squared"]].tolist() == ["classic", np.inf, 0.0, 1.0]
    assert frame.loc["L0H2", ["test", "f_stat", "p_value", "eta_squared"]].tolist() == ["classic", 0.0, 1.0, 0.0]
    unequal = frame.loc["L1H0"]
    assert unequal["levene_p"] < 0.05 and unequal["test"] == "classic"      # Welch's weights would be infinite
    close(unequal["p_value"], stats.f_oneway(values[:15, 1, 0], values[15:, 1, 0]).pvalue)


def test_group_anova_rejects_too_few_groups():
    values = rng().normal(size=(N, LAYERS, HEADS))
    with pytest.raises(UserError, match=r"1 group\(s\) with at least 2 examples .*the test needs at least 2"):
        inference.group_anova(values, ["a"] * (N - 1) + ["b"])
    with pytest.raises(UserError, match="29 group labels for 30 examples"):
        inference.group_anova(values, ["a", "b"] * 14 + ["a"])


# -- matched_vs_mismatched and compare_models


def test_matched_vs_mismatched_matches_scipy_and_sklearn():
    r = rng(13)
    matched = r.uniform(0.2, 0.6, (N, LAYERS, HEADS))
    mismatched = matched - r.normal(0.02, 0.1, (N, LAYERS, HEADS))
    matched[3, 0, 1] = np.nan
    mismatched[[5, 6], 1, 1] = np.nan
    frame = inference.matched_vs_mismatched(matched, mismatched)
    assert list(frame.columns) == inference.MATCHED_COLUMNS
    check_heads(frame)
    for row, (layer, head) in zip(frame.itertuples(), [(layer, head) for layer in range(2) for head in range(3)]):
        x, y = matched[:, layer, head], mismatched[:, layer, head]
        keep = ~np.isnan(x) & ~np.isnan(y)
        x, y = x[keep], y[keep]
        test = stats.ttest_rel(x, y)
        auc = roc_auc_score([1] * len(x) + [0] * len(y), list(x) + list(y))
        close([row.mean_matched, row.mean_mismatched, row.mean_difference, row.t_stat, row.p_value, row.cohens_d,
               row.auc], [x.mean(), y.mean(), (x - y).mean(), test.statistic, test.pvalue,
                          (x - y).mean() / (x - y).std(ddof=1), auc])
        assert row.n == keep.sum()
    assert frame["n"].tolist() == [N, N - 1, N, N, N - 2, N]
    check_family(frame, "holm")


def test_matched_vs_mismatched_finds_the_planted_head():
    r = rng(14)
    mismatched = r.uniform(0.1, 0.5, (N, LAYERS, HEADS))
    noise = r.normal(0, 0.05, (N, LAYERS, HEADS))
    matched = mismatched + noise - noise.mean(axis=0)
    matched[:, 0, 0] += 0.4                       # L0H0 tells the true pair from the false one
    frame = inference.matched_vs_mismatched(matched, mismatched)
    assert frame.loc[frame.significant, "condition"].tolist() == ["L0H0"]
    assert frame.set_index("condition").loc["L0H0", "auc"] > 0.9


def test_matched_vs_mismatched_degenerate():
    matched = np.full((N, LAYERS, HEADS), np.nan)
    matched[0] = 1.0
    mismatched = np.zeros((N, LAYERS, HEADS))
    frame = inference.matched_vs_mismatched(matched, mismatched)
    assert frame["n"].eq(1).all() and frame["p_value"].isna().all() and not frame["significant"].any()
    assert frame["auc"].eq(1.0).all()             # defined for one pair
    frame = inference.matched_vs_mismatched(np.full((N, LAYERS, HEADS), np.nan), mismatched)
    assert frame["n"].eq(0).all() and frame[["auc", "mean_matched", "t_stat"]].isna().all(axis=None)
    with pytest.raises(UserError, match=r"matched has shape \(30, 2, 3\) but mismatched has shape \(30, 2, 4\)"):
        inference.matched_vs_mismatched(np.zeros((N, 2, 3)), np.zeros((N, 2, 4)))


def test_compare_models_matches_ttest_rel():
    r = rng(15)
    a = r.normal(0.4, 0.1, (N, LAYERS, HEADS))
    b = a + r.normal(0.01, 0.05, (N, LAYERS, HEADS))
    b[[2, 8], 0, 2] = np.nan
    frame = inference.compare_models(a, b, "entropy", "bh", 0.1)
    assert list(frame.columns) == inference.COMPARISON_COLUMNS
    check_heads(frame)
    assert frame["statistic"].eq("entropy").all()
    for row, (layer, head) in zip(frame.itertuples(), [(layer, head) for layer in range(2) for head in range(3)]):
        x, y = a[:, layer, head], b[:, layer, head]
        keep = ~np.isnan(y)
        test = stats.ttest_rel(y[keep], x[keep])
        d = y[keep] - x[keep]
        close([row.mean_a, row.mean_b, row.mean_difference, row.t_stat, row.p_value, row.cohens_d],
              [x[keep].mean(), y[keep].mean(), d.mean(), test.statistic, test.pvalue, d.mean() / d.std(ddof=1)])
        assert row.n == keep.sum()
    check_family(frame, "fdr_bh", 0.1)


def test_compare_models_finds_the_planted_head_and_its_direction():
    r = rng(16)
    a = r.normal(0.4, 0.1, (N, LAYERS, HEADS))
    noise = r.normal(0, 0.05, (N, LAYERS, HEADS))
    b = a + noise - noise.mean(axis=0)
    b[:, 1, 1] -= 0.2                             # fine-tuning lowered L1H1
    frame = inference.compare_models(a, b, "q2c_mass")
    hits = frame[frame.significant]
    assert hits["condition"].tolist() == ["L1H1"]
    assert hits["mean_difference"].item() < 0 and hits["t_stat"].item() < 0 and hits["cohens_d"].item() < -2
    b[:, 1, 1] = a[:, 1, 1]                       # identical models: no evidence, by the limits
    same = inference.compare_models(a, b, "q2c_mass").set_index("condition").loc["L1H1"]
    assert [same["t_stat"], same["p_value"], same["cohens_d"], same["significant"]] == [0.0, 1.0, 0.0, False]


def test_compare_models_rejects_different_shapes():
    with pytest.raises(UserError, match=r"a has shape \(30, 12, 12\) but b has shape \(30, 6, 12\)"):
        inference.compare_models(np.zeros((N, 12, 12)), np.zeros((N, 6, 12)), "entropy")
