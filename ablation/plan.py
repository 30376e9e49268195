"""The ablation's work planned before it starts: how the memory budget (`ablation.max_memory_gb`) is spent, the
engine's `Layout` that keeps to it, and a time estimate from the first batches.

What the process holds while it ablates, and how each part is counted:
- `fixed`: the process as it stands when planning (model, data, libraries), measured; on a GPU, the model on it.
- `baseline`: the unmasked embeddings of both sides, float32.
- `scores`: one block of query × candidate scores being ranked (with its comparison), `SCORE_ROWS` queries at once
  (fixed, as every evaluation here scores: the ranks never depend on the budget).
- `forward`: one batch's pass through a layer (the feed-forward's inner states, attention weights), the largest.
- `cache`: per cached batch, its layer input, head outputs and the next layer's input (3 × tokens × hidden).
- `conditions`: each condition's embeddings of the whole pool, held until its ranks are taken.
A budget that cannot hold every fixed part, one condition and one batch of each side is refused, naming the
setting, before any long pass; so is one that cannot hold the gradient's pass when the run computes it (`gradient`:
the baseline's embeddings and their gradients, a block of the loss's scores, and the autograd graph of one batch
through every layer).
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass

import torch

from codesearch.errors import UserError
from heads.encoder import Encoder
from heads.memory import available_bytes, device_bytes, process_bytes

from .conditions import Condition
from .engine import WHOLE, Layout, SideInputs, condition_groups

GiB = 2**30
AUTO_SHARE_RAM = 0.8        # auto budget: this share of the memory available when the run starts
AUTO_SHARE_DEVICE = 0.9     # of the free GPU memory
SCORE_ROWS = 1024           # queries scored at once (whole_pool's block, as `evaluate` scores)
SCORE_BYTES = 12            # per score: float32 score, the >= comparison, a margin for the gather
LOSS_SCORE_BYTES = 16       # per score of the gradient's loss: scores, saved log-softmax, their gradient
# Conditions per group when chunked, at most (memory may allow fewer): each group walks the pool up to its highest
# layer, so a group of at least a layer's heads keeps the walks a small part of the work; and at most this many, so
# that an interruption loses little (a group's conditions are saved when the group ends).
GROUP_CONDITIONS = 12
# Of the room left beside the group, the share the chunks' cache takes: larger chunks are no faster (every batch is
# walked once per group whatever the chunks), so the rest is left as slack for the allocator.
CHUNK_SHARE = 0.5


def gib(n_bytes: float) -> str:
    return f"{n_bytes / GiB:.2f} GiB" if n_bytes >= GiB / 10 else f"{max(1, round(n_bytes / 2**20))} MiB"


@dataclass(frozen=True)
class Budget:
    bytes: int
    source: str       # where the number comes from, for the messages and the record
    fixed: int        # already held when planning


def memory_budget(max_memory_gb: float | None, device: torch.device) -> Budget:
    """The bytes the ablation may use in all: `max_memory_gb`, or (null) this process and a share of what is
    available now. On a GPU the budget is the device's (the model, the cache and the scoring live there), never
    more than is free."""
    if device.type == "cuda":
        held, free = device_bytes(device)
        auto = held + int(AUTO_SHARE_DEVICE * free)
        if max_memory_gb is None:
            return Budget(auto, f"ablation.max_memory_gb=null: {AUTO_SHARE_DEVICE:.0%} of the free memory of {device}",
                          held)
        if auto < max_memory_gb * GiB:
            return Budget(auto, f"ablation.max_memory_gb={max_memory_gb}, capped at {AUTO_SHARE_DEVICE:.0%} of the "
                                f"free memory of {device}", held)
        return Budget(int(max_memory_gb * GiB), f"ablation.max_memory_gb={max_memory_gb} on {device}", held)
    held = process_bytes()
    if max_memory_gb is None:
        available = available_bytes()
        if not available:
            raise UserError("cannot tell how much memory this machine has available (no /proc/meminfo): set "
                            "ablation.max_memory_gb")
        return Budget(held + int(AUTO_SHARE_RAM * available),
                      f"ablation.max_memory_gb=null: this process and {AUTO_SHARE_RAM:.0%} of the available memory",
                      held)
    return Budget(int(max_memory_gb * GiB), f"ablation.max_memory_gb={max_memory_gb}", held)


@dataclass
class MemoryPlan:
    """How the budget is spent (bytes) and the layout that keeps to it."""
    budget: int
    budget_source: str
    fixed: int
    baseline: int
    scores: int
    score_rows: int
    forward: int
    condition: int          # one condition's embeddings, every side it touches
    whole_cache: int        # every batch of both sides cached at once (one chunk)
    cache: int              # the cache as planned
    group_size: int         # conditions whose embeddings are held at once
    chunks: dict            # side -> number of chunks
    layout: Layout
    planned_peak: int

    @property
    def chunked(self) -> bool:
        return any(n > 1 for n in self.chunks.values())

    def summary(self) -> dict:
        out = asdict(self)
        out["layout"] = {"chunk_tokens": dict(self.layout.chunk_tokens), "group_size": self.layout.group_size}
        return out

    def describe(self) -> str:
        cut = ("every batch cached at once" if not self.chunked else
               f"chunks of the pool ({', '.join(f'{side} {n}' for side, n in self.chunks.items())}), conditions in "
               f"groups of up to {self.group_size}")
        return (f"memory: {cut}; about {gib(self.planned_peak)} of {gib(self.budget)} ({self.budget_source}): "
                f"process {gib(self.fixed)}, baseline {gib(self.baseline)}, layer cache {gib(self.cache)} (whole: "
                f"{gib(self.whole_cache)}), embeddings {gib(self.condition)} per condition held, scores "
                f"{gib(self.scores)}, one batch's forward {gib(self.forward)}")


def cache_bytes(encoder: Encoder, tokens: int, element: int) -> int:
    """The layer cache of `tokens` padded tokens (`element` bytes a number): layer input, head outputs, next input."""
    return 3 * tokens * encoder.model.config.hidden_size * element


def forward_bytes(encoder: Encoder, inputs: SideInputs, element: int) -> int:
    """The working memory of one layer's pass over the side's largest batch."""
    config = encoder.model.config
    largest = 0
    for rows, width in inputs.batch_shapes():
        states = rows * width * (2 * config.intermediate_size + 6 * config.hidden_size)
        attention = 3 * rows * config.num_attention_heads * width * width
        largest = max(largest, (states + attention) * element)
    return largest


def gradient_bytes(encoder: Encoder, inputs: dict[str, SideInputs], element: int) -> int:
    """The gradient pass's peak beside the process: the baseline's embeddings and their gradients, a block of the
    loss's scores, and the autograd graph of the largest batch through every layer (each layer keeps its inputs,
    projections, attention weights and feed-forward states for the backward pass)."""
    config = encoder.model.config
    dim = config.hidden_size
    embeddings = 3 * sum(side.n for side in inputs.values()) * encoder.output_dim * 4
    loss = _score_block(inputs) * LOSS_SCORE_BYTES
    graph = 0
    for side in inputs:
        for rows, width in inputs[side].batch_shapes():
            per_layer = rows * width * (12 * dim + 2 * config.intermediate_size) \
                + 2 * rows * config.num_attention_heads * width * width
            graph = max(graph, per_layer * encoder.n_layers * element)
    return embeddings + loss + graph


def _score_block(inputs: dict[str, SideInputs]) -> int:
    """Scores held at once while ranking: a block of queries × the pool (bi-encoder), or every pair's (cross)."""
    if "query" in inputs:
        return min(SCORE_ROWS, max(1, inputs["query"].n)) * inputs["code"].n
    return sum(side.n for side in inputs.values())


def plan_memory(encoder: Encoder, inputs: dict[str, SideInputs], conditions: list[Condition],
                budget: Budget, element: int = 4, gradient: bool = False) -> MemoryPlan:
    """The layout that fits the budget (activations of `element` bytes: 4 in fp32 and tf32, 2 in bf16): everything
    cached at once when it fits, else the pool in chunks with as many conditions held at once as fit; refused when
    not even one condition and one batch per side fit, or (with `gradient`) when the gradient's pass does not."""
    touched = [side for side in inputs if any(c.affects(side) for c in conditions)]
    dim = encoder.output_dim        # an embedding's size, or a cross-encoder's one score
    baseline = sum(side.n for side in inputs.values()) * dim * 4
    score_rows = min(SCORE_ROWS, max(1, inputs["query"].n)) if "query" in inputs else 0
    scores = _score_block(inputs) * SCORE_BYTES
    forward = max(forward_bytes(encoder, inputs[side], element) for side in touched)
    condition = sum(inputs[side].n for side in touched) * dim * 4
    side_cache = {side: cache_bytes(encoder, sum(inputs[side].batch_tokens()), element) for side in touched}
    batch_cache = {side: cache_bytes(encoder, max(inputs[side].batch_tokens()), element) for side in touched}
    whole_cache = sum(side_cache.values())
    room = budget.bytes - budget.fixed - baseline - scores - forward
    least = condition + sum(batch_cache.values())
    if room < least:
        raise UserError(
            f"{budget.source} cannot hold the ablation: it needs at least {gib(budget.bytes - room + least)} "
            f"(this process {gib(budget.fixed)}, baseline embeddings {gib(baseline)}, one condition's embeddings "
            f"{gib(condition)}, one batch per side cached {gib(sum(batch_cache.values()))} and its forward "
            f"{gib(forward)}, scores {gib(scores)}); raise ablation.max_memory_gb, or lower model.batch_size or "
            f"model.max_code_length")
    if gradient:
        needed = budget.fixed + gradient_bytes(encoder, inputs, element)
        if needed > budget.bytes:
            raise UserError(
                f"{budget.source} cannot hold the gradient estimate's pass: it needs about {gib(needed)} (this "
                f"process {gib(budget.fixed)}, the baseline's embeddings and their gradients, the loss's scores, one "
                f"batch's graph through every layer); raise ablation.max_memory_gb, lower model.batch_size, or set "
                f"ablation.gradient=false")
    per_layer = Counter(c.first_layer for c in conditions)
    if whole_cache + condition <= room:
        layout, group_size, cache, held = WHOLE, len(conditions), whole_cache, condition
    else:
        wanted = max(GROUP_CONDITIONS, max(per_layer.values()))
        group_size = max(1, min(wanted, len(conditions), (room - sum(batch_cache.values())) // condition))
        cache_room = max(sum(batch_cache.values()), int(CHUNK_SHARE * (room - group_size * condition)))
        chunk_room = _share_cache(side_cache, batch_cache, cache_room)
        per_token = cache_bytes(encoder, 1, element)
        layout = Layout({side: 0 if chunk_room[side] >= side_cache[side] else chunk_room[side] // per_token
                         for side in touched}, group_size)
        cache, held = sum(min(chunk_room[s], side_cache[s]) for s in touched), group_size * condition
    chunks = {side: len(layout.chunks(side, inputs[side])) for side in touched}
    return MemoryPlan(budget=budget.bytes, budget_source=budget.source, fixed=budget.fixed, baseline=baseline,
                      scores=scores, score_rows=score_rows, forward=forward, condition=condition,
                      whole_cache=whole_cache, cache=cache, group_size=group_size, chunks=chunks, layout=layout,
                      planned_peak=budget.fixed + baseline + scores + forward + cache + held)


def _share_cache(whole: dict[str, int], least: dict[str, int], room: int) -> dict[str, int]:
    """Cache room per side: a side whose whole cache fits beside the other's least gets it whole; otherwise in
    proportion to the sides' whole caches, each at least its largest batch."""
    if len(whole) == 1:
        return {side: room for side in whole}
    share = {}
    for side in whole:
        other = sum(v for s, v in least.items() if s != side)
        if whole[side] + other <= room and whole[side] <= room / 2:
            share[side] = whole[side]
    rest = [s for s in whole if s not in share]
    left = room - sum(share.values())
    total = sum(whole[s] for s in rest)
    for side in rest:
        others_least = sum(least[s] for s in rest if s != side)
        share[side] = int(min(max(left * whole[side] / total, least[side]), left - others_least))
        left -= share[side]
        total -= whole[side]
    return share


# ---------------------------------------------------------------- time

@dataclass
class TimeEstimate:
    """Seconds, estimated from one timed batch (the longest: an upper bound per token)."""
    seconds_per_layer_token: float
    baseline_s: float
    gradient_s: float
    ablation_s: float
    per_condition_s: float

    def describe(self) -> str:
        return (f"time (from the first batches, about): baseline {_duration(self.baseline_s)}, gradient "
                f"{_duration(self.gradient_s)}, ablation {_duration(self.ablation_s)} "
                f"({_duration(self.per_condition_s)} per condition)")


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "none"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@torch.inference_mode()
def time_per_layer_token(encoder: Encoder, inputs: dict[str, SideInputs]) -> float:
    """Seconds per token and layer of a forward pass, timed on the longest batch of the longer side (after one
    untimed pass of it, which pays the first call's setup)."""
    batch = max((inputs[side].batches[0] for side in inputs if len(inputs[side].batches)),
                key=lambda b: b.input_ids.numel())
    types = {} if batch.token_type_ids is None else {"token_type_ids": batch.token_type_ids}
    timings = []
    for _ in range(2):
        _synchronize(encoder.device)
        started = time.perf_counter()
        encoder.backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **types)
        _synchronize(encoder.device)
        timings.append(time.perf_counter() - started)
    return timings[-1] / (batch.input_ids.numel() * encoder.n_layers)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def estimate_time(encoder: Encoder, inputs: dict[str, SideInputs], conditions: list[Condition], plan: MemoryPlan,
                  baseline_passes: int, gradient_sides: tuple[str, ...], seconds_per_layer_token: float,
                  checks: tuple[Condition, ...] = ()) -> TimeEstimate:
    """Baseline (`baseline_passes` passes of both sides: 0 when cached, 2 with a precision check's fp32 baseline),
    gradient (a forward and a backward of the sides it takes, about three passes) and the ablation: the walks of the
    cache up to each group's layer, and each condition's rerun from its layer up; `checks` are conditions run apart
    as well (the precision check), each with its own walk."""
    tokens = {side: sum(inputs[side].batch_tokens()) for side in inputs}
    layers = encoder.n_layers
    per = seconds_per_layer_token
    baseline = per * layers * sum(tokens.values()) * baseline_passes
    gradient = 3 * per * layers * sum(tokens[side] for side in gradient_sides)
    touched = [side for side in inputs if any(c.affects(side) for c in (*conditions, *checks))]
    walk_tokens = sum(tokens[side] for side in touched)

    def walks_and_reruns(group_list: list[list[Condition]]) -> float:
        walks = sum(max(c.first_layer for c in group) + 1 for group in group_list)
        reruns = sum((layers - c.first_layer) * sum(tokens[s] for s in touched if c.affects(s))
                     for group in group_list for c in group)
        return per * (walks * walk_tokens + reruns)
    ablation = walks_and_reruns(condition_groups(conditions, plan.layout, plan.chunked)) if conditions else 0.0
    checked = walks_and_reruns([[c] for c in checks])
    return TimeEstimate(per, baseline, gradient, ablation + checked, ablation / max(1, len(conditions)))


def report_plan(plan: MemoryPlan, estimate: TimeEstimate) -> None:
    print(f"plan: {plan.describe()}", file=sys.stderr)
    print(f"plan: {estimate.describe()}", file=sys.stderr)

