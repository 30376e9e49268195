"""What a study ablates: conditions, each a set of heads masked together, how, and on which side."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heads.naming import HeadId, head_set_name, parse_head_set_name, parse_head_spec
from heads.pairs import CODE, QUERY

from .settings import Side

# The bi-encoder's sides a condition masks. A cross-encoder's one input ("pair") holds both: every condition masks
# it, a query or code condition only at that segment's tokens (`Condition.segment`).
SIDES_OF = {Side.query: ("query",), Side.code: ("code",), Side.both: ("query", "code")}
PAIR_SEGMENT = {Side.query: QUERY, Side.code: CODE, Side.both: None}


@dataclass(frozen=True)
class Condition:
    name: str                   # `L3H7` for one head, the set's name (`L3H*`, `L3H5+L4H1`) for a set
    heads: tuple[HeadId, ...]
    mode: str = "zero"
    side: str = "both"

    @property
    def first_layer(self) -> int:
        return min(h.layer for h in self.heads)

    @property
    def single_head(self) -> HeadId | None:
        return self.heads[0] if len(self.heads) == 1 else None

    def affects(self, side: str) -> bool:
        return side == "pair" or side in SIDES_OF[self.side]

    @property
    def segment(self) -> int | None:
        """In a pair input, the segment whose tokens the mask replaces (None: every token)."""
        return PAIR_SEGMENT[Side(self.side)]

    def grad_score(self, scores: np.ndarray | None) -> float | None:
        """The head's gradient estimate from [layers, heads] scores; None for a set or without scores."""
        head = self.single_head
        return None if scores is None or head is None else float(scores[head.layer, head.index])


def build_conditions(spec: str, per_head: bool, n_layers: int, n_heads: int, mode: str = "zero",
                     side: str = "both") -> list[Condition]:
    """One condition per head of the spec (`per_head`), or the whole spec as one condition."""
    heads = parse_head_spec(spec, n_layers, n_heads)
    mode, side = str(mode), str(side)
    if per_head:
        return [Condition(h.name, (h,), mode, side) for h in heads]
    name = heads[0].name if len(heads) == 1 else head_set_name(spec)
    return [Condition(name, tuple(heads), mode, side)]


def condition_named(name: str, mode: str, side: str, n_layers: int, n_heads: int) -> Condition:
    """The condition a table names (`L3H7`, `L3H5+L4H1`, `L3H*`)."""
    return Condition(name, tuple(parse_head_set_name(name, n_layers, n_heads)), mode, side)


def top_k(conditions: list[Condition], scores: np.ndarray, k: int) -> list[Condition]:
    """The k single-head conditions with the largest |grad_score| (ties by name), in their original order."""
    by_score = sorted(conditions, key=lambda c: (-abs(c.grad_score(scores)), c.name))
    chosen = {c.name for c in by_score[:k]}
    return [c for c in conditions if c.name in chosen]


def shard(conditions: list[Condition], i: int, n: int) -> list[Condition]:
    """The i-th of n shares (1-based), every n-th condition from the i-th: each share spans the layers, so the shards
    of a job array take about the same time."""
    return conditions[i - 1::n]
