"""The cached ablation path against the naive one, the paired statistics against scipy and statsmodels, and the
gradient estimate against finite differences."""
import itertools

import numpy as np
import pytest
import torch
from scipy import stats
from statsmodels.stats.multitest import multipletests

from ablation.conditions import Condition, build_conditions
from ablation.engine import run_conditions, side_inputs
from ablation.gradient import gradient_scores, retrieval_loss
from ablation.means import head_means
from ablation.settings import ReportSettings
from ablation.stats import compare_paired, condition_rng, unreachable_significance
from ablation.table import importance_frame, latex_escape, to_latex, to_markdown
from codesearch.errors import UserError
from codesearch.metrics import whole_pool
from codesearch.statistics import adjust_pvalues
from heads.hooks import GradientMask, HeadMask, hook_z
from heads.models import load_encoder
from heads.naming import HeadId
from heads.retrieval import Embeddings
from heads.settings import ModelConfig

QUERIES = ["sum two numbers", "reverse a string", "read a file", "x", "parse lines of text", "count the words",
           "merge the two sorted lists into one"]
CODES = ["def add(a, b): return a + b", "def rev(s): return s[::-1]", "def read(p): return open(p).read()",
         "y = 1", "for line in text.splitlines(): parse(line)", "len(text.split())", "return sorted(a + b)"]
SIZES = ModelConfig(max_query_length=32, max_code_length=48, batch_size=3)


def run_on_texts(encoder, conditions, on_result, **kwargs):
    """The engine on QUERIES and CODES, at SIZES."""
    run_conditions(encoder, side_inputs(encoder, QUERIES, 32, 3), side_inputs(encoder, CODES, 48, 3), conditions,
                   on_result, progress=False, **kwargs)


@pytest.fixture(params=["tiny_bert_dir", "tiny_roberta_dir"])
def encoder(request):
    return load_encoder(str(request.getfixturevalue(request.param)))


def naive(encoder, condition, means):
    """The whole model per condition with the mask hooked in: the reference the fast path must match
    (same lengths, 32 and 48, and batch size, 3, as the fast path gets in these tests)."""
    out = {}
    for side, texts, length in (("query", QUERIES, 32), ("code", CODES, 48)):
        mask = HeadMask(condition.heads, condition.mode, means[side]) if condition.affects(side) else None
        out[side] = encoder.encode(texts, length, 3, hook=mask, progress=False)
    return out


@pytest.mark.parametrize("mode", ["zero", "mean", "resample"])
@pytest.mark.parametrize("side", ["query", "code", "both"])
def test_cached_path_is_bit_identical_to_the_naive_path(encoder, mode, side):
    means = {"query": head_means(encoder, QUERIES[::-1], 32, 3), "code": head_means(encoder, CODES[::-1], 48, 3)}
    conditions = [Condition(f"L{layer}H{head}", (HeadId(layer, head),), mode, side)
                  for layer in range(encoder.n_layers) for head in (0, encoder.n_heads - 1)]
    conditions.append(Condition("set", (HeadId(0, 1), HeadId(encoder.n_layers - 1, 2)), mode, side))
    got = {}
    run_on_texts(encoder, conditions, lambda c, q, k: got.__setitem__(c.name, (q, k)), means=means)
    assert set(got) == {c.name for c in conditions}
    baseline = naive(encoder, Condition("none", (HeadId(0, 0),), mode, "query"), means)["code"]
    for condition in conditions:
        reference = naive(encoder, condition, means)
        query_emb, code_emb = got[condition.name]
        assert (query_emb is None) == (side == "code") and (code_emb is None) == (side == "query")
        if query_emb is not None:
            assert torch.equal(query_emb, reference["query"]), condition
        if code_emb is not None:
            assert torch.equal(code_emb, reference["code"]), condition
            assert not torch.equal(code_emb, baseline)  # the mask did something
        gold = np.arange(len(QUERIES))
        q = reference["query"] if query_emb is None else query_emb
        c = reference["code"] if code_emb is None else code_emb
        expected = whole_pool(reference["query"], reference["code"], gold).ranks
        assert np.array_equal(whole_pool(q, c, gold).ranks, expected)


def test_builtin_model_cached_equals_naive(builtin_encoder):
    conditions = build_conditions("0.3,3.7,5.11", True, 6, 12)
    got = {}
    run_on_texts(builtin_encoder, conditions, lambda c, q, k: got.__setitem__(c.name, (q, k)))
    for condition in conditions:
        reference = naive(builtin_encoder, condition, {"query": None, "code": None})
        assert torch.equal(got[condition.name][0], reference["query"])
        assert torch.equal(got[condition.name][1], reference["code"])


def test_empty_mean_set_is_an_error(encoder):
    with pytest.raises(UserError, match="mean-masking set is empty"):
        head_means(encoder, [], 32, 3)


# ---------------------------------------------------------------- statistics

def paired_vectors(seed=0, n=200):
    rng = np.random.default_rng(seed)
    baseline = 1.0 / rng.integers(1, 20, size=n)
    ablated = baseline.copy()
    hit = rng.random(n) < 0.4  # most queries are untouched, as in a head ablation
    ablated[hit] = 1.0 / rng.integers(1, 30, size=hit.sum())
    return baseline, ablated


def test_paired_statistics_against_scipy():
    baseline, ablated = paired_vectors()
    result = compare_paired(baseline, ablated, condition_rng(0, "L1H1"), n_bootstrap=4000, n_permutations=4000)
    d = ablated - baseline
    t_test = stats.ttest_rel(ablated, baseline)
    assert result.delta_mrr == pytest.approx(ablated.mean() - baseline.mean())
    assert (result.t_stat, result.p_value) == pytest.approx((t_test.statistic, t_test.pvalue))
    assert result.cohens_d == pytest.approx(d.mean() / d.std(ddof=1))
    assert result.ci_low < result.delta_mrr < result.ci_high
    # The percentile interval is about mean ± 1.96 standard errors at this size.
    se = d.std(ddof=1) / np.sqrt(len(d))
    assert result.ci_low == pytest.approx(d.mean() - 1.96 * se, abs=0.3 * se)
    assert result.ci_high == pytest.approx(d.mean() + 1.96 * se, abs=0.3 * se)
    # At this size the permutation test and the t-test agree.
    assert abs(np.log10(result.p_perm) - np.log10(max(result.p_value, 1 / 4001))) < 0.5


def test_sign_flip_p_value_matches_exact_enumeration():
    rng = np.random.default_rng(3)
    baseline = rng.random(10)
    ablated = baseline + rng.normal(0.1, 0.2, size=10)
    d = ablated - baseline
    observed = abs(d.mean())
    flips = np.array(list(itertools.product([-1, 1], repeat=10)))
    exact = np.mean(np.abs((flips * d).mean(axis=1)) >= observed - 1e-12)
    # 2^10 = 1024 <= n_permutations: scipy enumerates every sign flip.
    result = compare_paired(baseline, ablated, condition_rng(0, "x"), n_bootstrap=1000, n_permutations=2000)
    assert result.p_perm == pytest.approx(exact)


def test_untouched_queries_give_no_effect():
    baseline, _ = paired_vectors()
    result = compare_paired(baseline, baseline.copy(), condition_rng(0, "x"))
    assert (result.delta_mrr, result.ci_low, result.ci_high, result.t_stat, result.p_value, result.p_perm,
            result.cohens_d) == (0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0)


def test_differences_without_spread_get_their_limits():
    # Equal differences up to float noise (1/2 - 1/3 and 1/3 - 1/6) are constant: infinite t and d, not 1e16.
    constant = compare_paired(np.array([1 / 2, 1 / 3]), np.array([1 / 3, 1 / 6]), condition_rng(0, "x"))
    assert (constant.t_stat, constant.cohens_d, constant.p_value) == (-np.inf, -np.inf, 0.0)
    assert constant.p_perm == 0.5 and constant.ci_low == constant.ci_high == pytest.approx(-1 / 6)
    # One query: no test is possible, and nothing may look significant.
    single = compare_paired(np.array([0.5]), np.array([0.25]), condition_rng(0, "x"))
    assert single.delta_mrr == -0.25 and single.p_perm == 1.0
    assert all(np.isnan(v) for v in (single.t_stat, single.p_value, single.cohens_d, single.ci_low))


def test_a_condition_without_a_test_takes_no_part_in_the_correction():
    p = np.array([0.01, np.nan, 0.02])
    for method, reference in (("holm", "holm"), ("bh", "fdr_bh")):
        adjusted, significant = adjust_pvalues(p, method, 0.05)
        np.testing.assert_allclose(adjusted[[0, 2]], multipletests([0.01, 0.02], method=reference)[1])
        assert np.isnan(adjusted[1]) and significant.tolist() == [True, False, True]


def test_significant_means_strictly_below_alpha():
    adjusted, significant = adjust_pvalues(np.array([0.025, 0.5]), "holm", 0.05)
    assert adjusted[0] == pytest.approx(0.05) and not significant[0]   # statsmodels' reject would say True here


def test_a_warning_when_the_permutation_floor_makes_significance_unreachable():
    # The floor: an effect no sign flip comes near still gets p_perm = 2 / (n_permutations + 1).
    baseline = np.linspace(0.2, 0.9, 30)
    strong = compare_paired(baseline, baseline - 0.5 + np.linspace(0, 0.01, 30), condition_rng(0, "x"),
                            n_bootstrap=200, n_permutations=999)
    assert strong.p_perm == pytest.approx(2 / 1000)
    settings = ReportSettings(primary_test="permutation", correction="holm", n_permutations=999, alpha=0.05)
    warning = unreachable_significance(72, settings)           # 72 x 0.002 = 0.144 >= 0.05
    assert warning and "above 2880" in warning
    assert unreachable_significance(24, settings) is None        # 24 x 0.002 = 0.048 < 0.05
    assert unreachable_significance(72, ReportSettings(primary_test="t", n_permutations=999)) is None


def test_same_seed_and_name_same_numbers_whatever_the_order():
    baseline, ablated = paired_vectors()
    a = compare_paired(baseline, ablated, condition_rng(7, "L2H3"), n_bootstrap=500, n_permutations=500)
    compare_paired(baseline, ablated[::-1], condition_rng(7, "L0H0"), n_bootstrap=500, n_permutations=500)
    b = compare_paired(baseline, ablated, condition_rng(7, "L2H3"), n_bootstrap=500, n_permutations=500)
    assert a == b


def test_corrections_against_statsmodels_and_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5])
    adjusted, significant = adjust_pvalues(p, "holm", 0.05)
    # Holm by hand: sorted p times (m - rank), made monotone.
    order = np.argsort(p)
    by_hand = np.maximum.accumulate(np.minimum(1, p[order] * (len(p) - np.arange(len(p)))))
    expected = np.empty_like(p)
    expected[order] = by_hand
    np.testing.assert_allclose(adjusted, expected)
    assert significant.tolist() == (expected < 0.05).tolist()
    bh, _ = adjust_pvalues(p, "bh", 0.05)
    np.testing.assert_allclose(bh, multipletests(p, method="fdr_bh")[1])


# ---------------------------------------------------------------- paper tables

def _table_rows(modes: list[str]) -> list[dict]:
    return [dict(condition="L1H2", layer=1, head=2, mode=mode, side="both", baseline_mrr=0.5, ablated_mrr=0.4,
                 delta_mrr=-0.1, ci_low=-0.15, ci_high=-0.05, t_stat=-3.0, p_value=0.004, p_perm=0.005,
                 p_adjusted=0.008, cohens_d=-0.4, significant=True, grad_score=0.2, n_queries=50)
            for mode in modes]


def test_paper_tables_tell_apart_rows_of_other_masks():
    one_mode = to_markdown(importance_frame(_table_rows(["zero"])), "caption")
    assert "Mask" not in one_mode and "| L1H2" in one_mode and "-0.1000" in one_mode
    mixed = importance_frame(_table_rows(["zero", "mean"]))
    assert "zero, both" in to_markdown(mixed, "c") and "mean, both" in to_markdown(mixed, "c")
    assert "zero, both" in to_latex(mixed, "c")


def test_latex_prints_any_model_name_literally():
    assert latex_escape("a_b & c% $x# {y} ~z^ \\w") == (r"a\_b \& c\% \$x\# \{y\} \textasciitilde{}z"
                                                      r"\textasciicircum{} \textbackslash{}w")
    latex = to_latex(importance_frame(_table_rows(["zero"])), "Head ablation of /models/my_model&co (MRR 0.5)")
    assert r"/models/my\_model\&co" in latex and r"$\Delta$MRR" in latex


# ---------------------------------------------------------------- gradient estimate

def test_gradient_scores_match_finite_differences(tiny_bert_dir):
    encoder = load_encoder(str(tiny_bert_dir))
    gold = np.arange(len(QUERIES))
    q = encoder.encode(QUERIES, 32, 3, progress=False)
    c = encoder.encode(CODES, 48, 3, progress=False)
    scores = gradient_scores(encoder, QUERIES, CODES, gold, Embeddings(q, c), SIZES, temperature=0.1,
                             progress=False)

    def loss_with(mask_values):
        with hook_z(encoder.model, GradientMask(mask_values)), torch.no_grad():
            qm = encoder.encode(QUERIES, 32, 3, progress=False)
            cm = encoder.encode(CODES, 48, 3, progress=False)
        return float(retrieval_loss(qm, cm, gold, 0.1))

    # Central differences, on the heads the loss is most sensitive to (float32 noise swamps tiny slopes).
    eps = 0.05
    largest = np.argsort(-np.abs(scores).ravel())[:3]
    for layer, head in zip(*np.unravel_index(largest, scores.shape)):
        up, down = torch.ones(2, 4), torch.ones(2, 4)
        up[layer, head] += eps
        down[layer, head] -= eps
        derivative = (loss_with(up) - loss_with(down)) / (2 * eps)
        assert scores[layer, head] == pytest.approx(-derivative, rel=0.05)
    # Parameters are left as they were found.
    assert all(p.requires_grad for p in encoder.model.parameters())
