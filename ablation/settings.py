"""The settings of an ablation study: the `ablation` section of the config, its closed choices, and the
statistics a table is made with (light: no torch, so the command line checks a config before importing it)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Optional

from codesearch.errors import UserError
from codesearch.settings import Correction, Split, setting
from heads.naming import HeadId, is_every_head
from heads.settings import MaskMode


class Side(StrEnum):
    query = "query"
    code = "code"
    both = "both"       # the head is gone from the model


class Precision(StrEnum):
    fp32 = "fp32"
    tf32 = "tf32"       # CUDA only: float32 storage, TensorFloat-32 matrix products
    bf16 = "bf16"       # weights and activations in bfloat16


class PruneOrder(StrEnum):
    exact = "exact"             # the study's single-head ΔMRR (its ablation or aggregate)
    gradient = "gradient"       # the study's gradient estimate (Michel et al. 2019), once
    iterative = "iterative"     # the gradient estimate again after each step, with the pruned heads masked
    random = "random"           # a random order per seed: the control band


class RankBy(StrEnum):
    exact = "exact"
    gradient = "gradient"


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
    gradient: Optional[bool] = setting("also estimate every head's importance from one backward pass (Michel et al. "
                                       "2019); null = where the run reports it: whole-map runs (heads=*, "
                                       "per_head=true) and top_k", None)
    grad_temperature: float = setting("temperature of the contrastive retrieval loss the gradient is taken of", 0.05)
    top_k: int = setting("0: ablate every head of the spec exactly; k > 0: only the k heads with the largest "
                         "|grad_score| (needs the gradient, so not ablation.gradient=false)", 0)
    max_memory_gb: Optional[float] = setting("memory the ablation may use in all (process, layer cache, embeddings, "
                                             "score blocks; on a GPU, the device's memory); the pool is cut in chunks "
                                             "to keep to it. null = this process and 80% of the memory available at "
                                             "the start (on a GPU, 90% of its free memory)",
                                             None)
    precision: Precision = setting("fp32; tf32 (CUDA) or bf16, reported with how many ranks differ from fp32 on "
                                   "the same run", Precision.fp32)
    shard: Optional[str] = setting("i/n: this run ablates the i-th of n shares of the conditions (1 <= i <= n), "
                                   "for job arrays; aggregate the shards for the study's table. null = all", None)

    @property
    def whole_map(self) -> bool:
        """Every head of the model, one at a time: the run that reports the gradient estimate beside the map."""
        return bool(self.per_head) and is_every_head(self.head_spec)

    @property
    def gradient_wanted(self) -> bool:
        """`gradient`, or where it is null, whether the run reports it (a whole map, or top_k choosing by it)."""
        return bool(self.gradient) if self.gradient is not None else self.whole_map or self.top_k > 0

    @property
    def shard_of(self) -> tuple[int, int] | None:
        """(i, n) of `shard`, checked; None for all conditions."""
        return parse_shard(self.shard)

    @property
    def head_spec(self) -> str:
        """The heads to ablate: `heads`, or the one head `layer`/`head` name."""
        return HeadId(self.layer, self.head).name if self.layer is not None else str(self.heads)

    def report_settings(self, seed: int) -> ReportSettings:
        """The settings of this study's statistics."""
        return ReportSettings(seed=seed, **{key: _plain(getattr(self, key)) for key in REPORT_FIELDS})


@dataclass
class PruneConfig:
    orders: list[PruneOrder] = setting("pruning curves: the orders heads are masked in, cumulatively, least important "
                                       "first: exact (the study's single-head ΔMRR), gradient, iterative (Michel et "
                                       "al.: re-estimated after each step), random (one curve per prune.seeds); "
                                       "[] = no curves",
                                       factory=lambda: [PruneOrder.exact, PruneOrder.gradient, PruneOrder.iterative,
                                                        PruneOrder.random])
    seeds: list[int] = setting("seeds of the random orders (the control band)", factory=lambda: [0, 1, 2])
    steps: Optional[list[float]] = setting("fractions of the heads pruned at which MRR is measured, increasing, in "
                                           "[0, 1]; null = after every head", None)
    layer_heads: bool = setting("one head per layer: in each layer all heads but one masked, for every choice of "
                                "the kept head; then every layer with its best head", True)
    interactions: int = setting("K: every pair of the study's top-K heads masked together, its interaction "
                                "(drop together minus the drops alone) tested; 0 = none", 10)
    rank_by: RankBy = setting("what the top-K heads are ranked by: exact (the study's single-head ΔMRR) or "
                              "gradient", RankBy.exact)
    shapley_permutations: int = setting("Shapley values of the top-K heads by permutation sampling (all K! "
                                        "permutations when K! is not more); 0 = none", 0)
    ablation_run: str = setting("the ablation or aggregate folder whose single-head ΔMRR gives the exact order and "
                                "the top K; empty = the study's own", "")

    @property
    def wants_exact(self) -> bool:
        return PruneOrder.exact in self.orders or (self.interactions > 0 and self.rank_by == RankBy.exact)

    @property
    def wants_gradient(self) -> bool:
        return bool({PruneOrder.gradient, PruneOrder.iterative} & set(self.orders)) or \
            (self.interactions > 0 and self.rank_by == RankBy.gradient)


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


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """`i/n` as (i, n), 1 <= i <= n; None for null."""
    if shard is None:
        return None
    parts = str(shard).split("/")
    try:
        i, n = (int(p) for p in parts)
    except ValueError:
        i = n = 0
    if len(parts) != 2 or not 1 <= i <= n:
        raise UserError(f"ablation.shard={shard!r}: give i/n with 1 <= i <= n, e.g. 3/8 (shards are numbered from 1)")
    return i, n


def _plain(value):
    return str(value) if isinstance(value, StrEnum) else value
