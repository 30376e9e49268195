"""What a study ablates: conditions, each a set of heads masked together, how, and on which side."""
from __future__ import annotations

from dataclasses import dataclass

from heads.naming import HeadId, head_set_name, parse_head_spec

SIDES_OF = {"query": ("query",), "code": ("code",), "both": ("query", "code")}


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
        return side in SIDES_OF[self.side]


def build_conditions(spec: str, per_head: bool, n_layers: int, n_heads: int, mode: str = "zero",
                     side: str = "both") -> list[Condition]:
    """One condition per head of the spec (`per_head`), or the whole spec as one condition."""
    heads = parse_head_spec(spec, n_layers, n_heads)
    if per_head:
        return [Condition(h.name, (h,), mode, side) for h in heads]
    name = heads[0].name if len(heads) == 1 else head_set_name(spec)
    return [Condition(name, tuple(heads), mode, side)]
