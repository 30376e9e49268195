"""One way to name a head everywhere: `L3H7` in tables, runs and file names; `3.7` in specs.

A spec addresses a set of heads: `3.5` one head, `3.*` every head of layer 3, `*.0` head 0 of every layer,
`3.5,4.1` a list, `*` (or `*.*`) all of them. Names work in specs too (`L3H5`, `L3H*`), which no YAML or
sweep tool can mistake for a number (`3.10` read as a number is 3.1).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from codesearch.errors import UserError


class HeadSpecError(UserError):
    """A head spec that is empty, malformed, or addresses a head the model does not have."""


@dataclass(frozen=True, order=True)
class HeadId:
    layer: int
    head: int

    @property
    def name(self) -> str:
        return f"L{self.layer}H{self.head}"

    @property
    def spec(self) -> str:
        return f"{self.layer}.{self.head}"

    def __str__(self) -> str:
        return self.name


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


def parse_head_spec(spec: str, n_layers: int, n_heads: int) -> list[HeadId]:
    """The heads a spec addresses, sorted and without repeats; a clear error for a bad or out-of-range part."""
    if spec is None or not str(spec).strip():
        raise HeadSpecError("empty head spec: give heads as layer.head, e.g. 3.5, 3.*, *.0 or 3.5,4.1")
    heads: set[HeadId] = set()
    for raw in str(spec).split(","):
        part = raw.strip()
        if part in ("*", "*.*", "all"):
            part = "*.*"
        match = _PART.match(part) or _NAMED_PART.match(part)
        if not match:
            raise HeadSpecError(f"malformed head spec part {raw.strip()!r} in {spec!r}: expected layer.head "
                                f"with numbers or *, e.g. 3.5, 3.* or *.0 (or a name such as L3H5)")
        layer_text, head_text = match.groups()
        layers = range(n_layers) if layer_text == "*" else [int(layer_text)]
        head_range = range(n_heads) if head_text == "*" else [int(head_text)]
        for layer in layers:
            if not 0 <= layer < n_layers:
                raise HeadSpecError(f"head spec {part!r}: layer {layer} is out of range "
                                    f"(the model has layers 0..{n_layers - 1})")
            for head in head_range:
                if not 0 <= head < n_heads:
                    raise HeadSpecError(f"head spec {part!r}: head {head} is out of range "
                                        f"(the model has heads 0..{n_heads - 1} in each layer)")
                heads.add(HeadId(layer, head))
    return sorted(heads)


def head_set_name(spec: str) -> str:
    """The name of a head set in tables and runs: `3.5,4.1` -> `L3H5+L4H1`, `3.*` -> `L3H*`.

    Parts are put in layer/head order and repeats dropped, so `4.1,3.5` names the same condition as `3.5,4.1`.
    """
    parts = set()
    for raw in str(spec).split(","):
        part = raw.strip()
        if part in ("*", "*.*", "all"):
            part = "*.*"
        match = _PART.match(part) or _NAMED_PART.match(part)
        parts.add(match.groups() if match else (part, ""))

    def order(part: tuple[str, str]):  # numbers in numeric order, a wildcard before them
        return tuple((-1, "") if text == "*" else (int(text), "") if text.isdigit() else (-2, text) for text in part)

    return "+".join(f"L{layer}H{head}" if head else layer for layer, head in sorted(parts, key=order))
