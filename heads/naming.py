"""One way to name a head everywhere: `L3H7` in tables, runs, W&B and file names; `3.7` in specs.

A spec addresses a set of heads: `3.5` one head, `3.*` every head of layer 3, `*.0` head 0 of every layer,
`3.5,4.1` a list, `*` (or `*.*`) all of them. Names work in specs too (`L3H5`, `L3H*`), which no YAML or
sweep tool can mistake for a number (`3.10` read as a number is 3.1). A set is named by its parts in layer/head
order, joined by `+` (`L3H5+L4H1`, `L3H*`); that name reads back as a spec. Heads of the whole model are also
numbered flat, layer by layer (`layer * heads_per_layer + index`), as feature arrays hold them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from codesearch.errors import UserError


class HeadSpecError(UserError):
    """A head spec that is empty, malformed, or addresses a head the model does not have."""


def head_name(layer: int | str, index: int | str) -> str:
    """The one way a head is written: `L3H7` (a wildcard for either number gives a set's part, `L3H*`)."""
    return f"L{layer}H{index}"


@dataclass(frozen=True, order=True)
class HeadId:
    layer: int
    index: int      # the head's number within its layer

    @property
    def name(self) -> str:
        return head_name(self.layer, self.index)

    @property
    def spec(self) -> str:
        return f"{self.layer}.{self.index}"

    def flat(self, heads_per_layer: int) -> int:
        """The head's position among all heads of the model, layer by layer."""
        return self.layer * heads_per_layer + self.index

    @classmethod
    def from_flat(cls, flat: int, heads_per_layer: int) -> HeadId:
        return cls(*divmod(int(flat), heads_per_layer))

    def __str__(self) -> str:
        return self.name


ALL = ("*", "*.*", "all")
_NAME = re.compile(r"^L(\d+)H(\d+)$")
_PART = re.compile(r"^(\d+|\*)\.(\d+|\*)$")
_NAMED_PART = re.compile(r"^L(\d+|\*)H(\d+|\*)$")


def parse_head_name(text: str) -> HeadId:
    """`L3H7` (or `3.7`) to a HeadId."""
    text = text.strip()
    match = _NAME.match(text) or re.match(r"^(\d+)\.(\d+)$", text)
    if not match:
        raise HeadSpecError(f"{text!r} is not a head name (expected L<layer>H<head>, e.g. L3H7, or 3.7)")
    return HeadId(int(match.group(1)), int(match.group(2)))


def _parts(spec: str) -> list[tuple[str, str, str | None]]:
    """(text, layer, head) of each part of a spec (`*` for a wildcard); (text, text, None) for a malformed part."""
    parts = []
    for raw in str(spec).split(","):
        text = raw.strip()
        match = _PART.match("*.*" if text in ALL else text) or _NAMED_PART.match(text)
        parts.append((text, *match.groups()) if match else (text, text, None))
    return parts


def parse_head_spec(spec: str, n_layers: int, n_heads: int) -> list[HeadId]:
    """The heads a spec addresses, sorted and without repeats; a clear error for a bad or out-of-range part."""
    if spec is None or not str(spec).strip():
        raise HeadSpecError("empty head spec: give heads as layer.head, e.g. 3.5, 3.*, *.0 or 3.5,4.1")
    heads: set[HeadId] = set()
    for part, layer_text, head_text in _parts(spec):
        if head_text is None:
            raise HeadSpecError(f"malformed head spec part {part!r} in {spec!r}: expected layer.head "
                                f"with numbers or *, e.g. 3.5, 3.* or *.0 (or a name such as L3H5)")
        layers = range(n_layers) if layer_text == "*" else [int(layer_text)]
        head_range = range(n_heads) if head_text == "*" else [int(head_text)]
        for layer in layers:
            if not 0 <= layer < n_layers:
                raise HeadSpecError(f"head spec {part!r}: layer {layer} is out of range "
                                    f"(the model has layers 0..{n_layers - 1})")
            for index in head_range:
                if not 0 <= index < n_heads:
                    raise HeadSpecError(f"head spec {part!r}: head {index} is out of range "
                                        f"(the model has heads 0..{n_heads - 1} in each layer)")
                heads.add(HeadId(layer, index))
    return sorted(heads)


def head_set_name(spec: str) -> str:
    """The name of a head set in tables and runs: `3.5,4.1` -> `L3H5+L4H1`, `3.*` -> `L3H*`.

    Parts are put in layer/head order and repeats dropped, so `4.1,3.5` names the same condition as `3.5,4.1`.
    """
    def order(part: tuple[str, str | None]):  # numbers in numeric order, a wildcard before them
        return tuple((-1, "") if text == "*" else (int(text), "") if text and text.isdigit() else (-2, text or "")
                     for text in part)

    parts = {(layer, head) for _, layer, head in _parts(spec)}
    return "+".join(head_name(layer, head) if head is not None else layer for layer, head in sorted(parts, key=order))


def name_of_heads(heads, n_heads: int) -> str:
    """The name of an explicit set of heads, in layer/head order, a whole layer as `L3H*`: `L0H*+L3H5+L4H1`
    (`parse_head_set_name` reads it back)."""
    by_layer: dict[int, set[int]] = {}
    for head in heads:
        by_layer.setdefault(head.layer, set()).add(head.index)
    if not by_layer:
        raise ValueError("a head set needs at least one head")
    parts = []
    for layer in sorted(by_layer):
        indices = by_layer[layer]
        parts += [head_name(layer, "*")] if len(indices) == n_heads else [head_name(layer, i) for i in sorted(indices)]
    return "+".join(parts)


def parse_head_set_name(name: str, n_layers: int, n_heads: int) -> list[HeadId]:
    """The heads a table's condition names (`L3H7`, `L3H5+L4H1`, `L3H*`)."""
    return parse_head_spec(name.replace("+", ","), n_layers, n_heads)


def every_head(n_layers: int, n_heads: int) -> list[HeadId]:
    """All heads of a model, layer by layer (in flat order)."""
    return [HeadId(layer, index) for layer in range(n_layers) for index in range(n_heads)]


def is_every_head(spec: str) -> bool:
    return str(spec).strip() in ALL


def file_safe(name: str) -> str:
    """A head or set name as a file or folder name: the wildcard `*` becomes `x` (`L5H*` -> `L5Hx`)."""
    return name.replace("*", "x")
