"""The settings of a comparison of studies: the `compare` section of the config (light: no torch, no pandas)."""
from __future__ import annotations

from dataclasses import dataclass

from ablation.settings import Side  # the vocabulary of the ablation runs compared
from codesearch.errors import UserError
from codesearch.settings import Correction, setting
from heads.settings import MaskMode


@dataclass
class CompareConfig:
    mode: MaskMode = setting("the single-head ablation rows to compare: their mask mode", MaskMode.zero)
    side: Side = setting("the single-head ablation rows to compare: the side they were masked on", Side.both)
    n_bootstrap: int = setting("paired bootstrap resamples for the confidence intervals of the per-head and "
                               "baseline differences", 10000)
    n_permutations: int = setting("permutations for the p-values of the correlations of the two ΔMRR maps (and "
                                  "the sign-flip p of the paired differences)", 10000)
    top_k: int = setting("the overlap of the k most important heads (most negative ΔMRR) of each study; 0 = none",
                         10)
    correction: Correction = setting("multiple-comparison correction over heads of the paired per-head tests: holm "
                                     "or bh", Correction.holm)
    alpha: float = setting("significance level after correction", 0.05)

    @property
    def masking(self) -> str:
        """`zero mask, both sides`: the rows compared, in words."""
        return f"{self.mode} mask, {self.side} side" + ("s" if self.side == Side.both else "")

    def check(self) -> None:
        """What the types alone cannot say, each naming its key."""
        for key in ("n_bootstrap", "n_permutations"):
            if getattr(self, key) < 1:
                raise UserError(f"compare.{key}={getattr(self, key)}: must be at least 1")
        if self.top_k < 0:
            raise UserError(f"compare.top_k={self.top_k}: must be 0 or more")
        if not 0 < self.alpha < 1:
            raise UserError(f"compare.alpha={self.alpha}: must be between 0 and 1")
