"""What every study's statistics share: the multiple-comparison correction over a family of tests."""
from __future__ import annotations

import numpy as np
from statsmodels.stats.multitest import multipletests

from .settings import Correction

# statsmodels' names of the corrections.
CORRECTIONS = {Correction.holm: "holm", Correction.bh: "fdr_bh"}


def adjust_pvalues(pvalues: np.ndarray, method: str = "holm", alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(adjusted p-values, significant) over all tests of a family, with statsmodels' multipletests.

    Significant means p_adjusted < alpha (strictly). A NaN p-value (a test that could not be made) takes
    no part in the correction: its adjusted p is NaN and it is never significant.
    """
    pvalues = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full(pvalues.shape, np.nan)
    tested = ~np.isnan(pvalues)
    if tested.any():
        adjusted[tested] = multipletests(pvalues[tested], alpha=alpha, method=CORRECTIONS[method])[1]
    return adjusted, tested & (adjusted < alpha)
