"""The settings of an ablation study: the `ablation` section of the config, its closed choices, and the
statistics a table is made with (light: no torch, so the command line checks a config before importing it)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Optional

from codesearch.settings import Correction, Split, setting
from heads.naming import HeadId
from heads.settings import MaskMode


class Side(StrEnum):
    query = "query"
    code = "code"
    both = "both"       # the head is gone from the model


class PrimaryTest(StrEnum):
    t = "t"                         # paired t-test
    permutation = "permutation"     # paired sign-flip permutation test


@dataclass
class AblationConfig:
    heads: str = setting("heads to ablate, as a spec: 3.5, 3.*, *.0, 3.5,4.1, * (all); names work too: L3H5", "*")
    layer: Optional[int] = setting("with ablation.head, one head by number (what a sweep grid varies); "
                                   "null = use ablation.heads", None)
    head: Optional[int] = setting("with ablation.layer, one head by number", None)
    per_head: bool = setting("true: each head of the spec is its own condition (the single-head map); false: the "
                             "whole spec is masked together as one condition", True)
    mode: MaskMode = setting("zero (the classic head mask), mean (the head's mean output over held-out tokens), "
                             "resample (its output on another input of the same batch)", MaskMode.zero)
    side: Side = setting("mask on the query side, the code side, or both (the head is gone from the model)",
                         Side.both)
    mean_split: Split = setting("mean mode: the held-out split whose tokens give each head's mean", Split.valid)
    mean_samples: int = setting("mean mode: how many held-out functions (queries and code) to average over", 200)
    alpha: float = setting("significance level for p_adjusted", 0.05)
    correction: Correction = setting("multiple-comparison correction over all conditions: holm or bh "
                                     "(Benjamini-Hochberg)", Correction.holm)
    primary_test: PrimaryTest = setting("the test whose p-value is corrected: t (paired t-test) or permutation "
                                        "(paired sign-flip)", PrimaryTest.t)
    n_bootstrap: int = setting("paired bootstrap resamples for the ΔMRR confidence interval", 10000)
    n_permutations: int = setting("sign-flip permutations for p_perm", 10000)
    gradient: bool = setting("also estimate every head's importance from one backward pass (Michel et al. 2019)",
                             True)
    grad_temperature: float = setting("temperature of the contrastive retrieval loss the gradient is taken of", 0.05)
    top_k: int = setting("0: ablate every head of the spec exactly; k > 0: only the k heads with the largest "
                         "|grad_score| (needs ablation.gradient=true)", 0)
    max_cache_gb: float = setting("refuse to start if the layer cache would need more memory than this", 8.0)

    @property
    def head_spec(self) -> str:
        """The heads to ablate: `heads`, or the one head `layer`/`head` name."""
        return HeadId(self.layer, self.head).name if self.layer is not None else str(self.heads)

    def report_settings(self, seed: int) -> ReportSettings:
        """The settings of this study's statistics."""
        return ReportSettings(seed=seed, **{key: _plain(getattr(self, key)) for key in REPORT_FIELDS})


@dataclass(frozen=True)
class ReportSettings:
    """What decides a table's statistics, given the per-query ranks: the seed and the `ablation` keys below."""
    seed: int = 0
    alpha: float = 0.05
    correction: str = "holm"        # holm | bh
    primary_test: str = "t"         # t | permutation
    n_bootstrap: int = 10000
    n_permutations: int = 10000


REPORT_FIELDS = tuple(f.name for f in fields(ReportSettings) if f.name != "seed")   # each an `ablation` key too


def _plain(value):
    return str(value) if isinstance(value, StrEnum) else value
