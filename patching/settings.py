"""The settings of an activation-patching study: the `patch` section of the config (light: no torch)."""
from __future__ import annotations

from dataclasses import dataclass

from codesearch.errors import UserError
from codesearch.settings import Correction, setting


@dataclass
class PatchConfig:
    examples: int = setting("queries patched: a seeded sample of the evaluated split, each with its own code "
                            "(clean) and a seeded other code (corrupt); 0 = all", 200)
    alpha: float = setting("significance level for the corrected p-values", 0.05)
    correction: Correction = setting("multiple-comparison correction over the heads: holm or bh", Correction.holm)
    n_bootstrap: int = setting("bootstrap resamples (of examples) for each fraction's confidence interval", 10000)
    n_permutations: int = setting("permutations for the p-value of the Spearman correlation with ablation", 10000)
    ablation_run: str = setting("the ablation (or aggregate) folder whose single-head ΔMRR the patching is "
                                "correlated with; empty = the study's own, if there is one", "")

    def check(self) -> None:
        if self.examples < 0:
            raise UserError(f"patch.examples={self.examples}: must be 0 (all) or more")
        if not 0 < self.alpha < 1:
            raise UserError(f"patch.alpha={self.alpha}: must be in (0, 1)")
        for key in ("n_bootstrap", "n_permutations"):
            if getattr(self, key) < 1:
                raise UserError(f"patch.{key}={getattr(self, key)}: must be at least 1")
