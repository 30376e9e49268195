"""Two studies on the same queries and candidates, compared query by query.

The baselines: d_i = rr_B,i − rr_A,i. Each head h: how much more the head matters in B than in A, query by query,
d_i = (rr_B,h,i − rr_B,base,i) − (rr_A,h,i − rr_A,base,i); its mean is ΔMRR_B − ΔMRR_A, negative where the head
gained importance in B. Both go through the ablation's own paired statistics (`ablation.stats.compare_paired`:
percentile bootstrap CI, paired t-test, sign-flip permutation), each head with a generator of its own name.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ablation.stats import compare_paired, condition_rng
from codesearch.statistics import adjust_pvalues

from .settings import CompareConfig

TEST_COLUMNS = ["ci_low", "ci_high", "t_stat", "p_value", "p_perm", "p_adjusted", "cohens_d", "significant", "change",
                "n_queries"]


def baseline_test(wide_a: pd.DataFrame, wide_b: pd.DataFrame, settings: CompareConfig, seed: int) -> dict:
    """B's baseline against A's over the same queries (rows of both frames are the same sorted query ids)."""
    result = compare_paired(wide_a["baseline"].to_numpy(), wide_b["baseline"].to_numpy(),
                            condition_rng(seed, "baseline"), settings.n_bootstrap, settings.n_permutations)
    return {"mrr_a": result.baseline_mrr, "mrr_b": result.ablated_mrr, "difference": result.delta_mrr,
            "ci_low": result.ci_low, "ci_high": result.ci_high, "t_stat": result.t_stat, "p_value": result.p_value,
            "p_perm": result.p_perm, "cohens_d": result.cohens_d, "n_queries": result.n_queries}


def head_tests(heads: list[str], wide_a: pd.DataFrame, wide_b: pd.DataFrame, settings: CompareConfig,
               seed: int) -> pd.DataFrame:
    """One row per head: the paired test of d_i above, p adjusted over the heads, and whether the head gained
    importance in B (significant, difference < 0) or lost it (significant, difference > 0)."""
    rows = []
    for head in heads:
        effect_a = (wide_a[head] - wide_a["baseline"]).to_numpy()
        effect_b = (wide_b[head] - wide_b["baseline"]).to_numpy()
        result = compare_paired(effect_a, effect_b, condition_rng(seed, head), settings.n_bootstrap,
                                settings.n_permutations)
        rows.append({"condition": head, "difference": result.delta_mrr, "ci_low": result.ci_low,
                     "ci_high": result.ci_high, "t_stat": result.t_stat, "p_value": result.p_value,
                     "p_perm": result.p_perm, "cohens_d": result.cohens_d, "n_queries": result.n_queries})
    frame = pd.DataFrame(rows, columns=["condition", "difference", "ci_low", "ci_high", "t_stat", "p_value", "p_perm",
                                        "cohens_d", "n_queries"])
    frame["p_adjusted"], frame["significant"] = adjust_pvalues(frame["p_value"].to_numpy(), str(settings.correction),
                                                               settings.alpha)
    frame["change"] = np.where(frame["significant"], np.where(frame["difference"] < 0, "gained", "lost"), "")
    return frame
