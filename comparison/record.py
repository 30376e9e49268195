"""The record of a finished comparison (`compare`'s run.json)."""
from __future__ import annotations

from dataclasses import dataclass, field

from codesearch.runfolder import RunRecord


@dataclass(kw_only=True)
class CompareRecord(RunRecord):
    studies: list[dict]                     # per study: name, folders read, model, grid, task, baseline
    layers: int
    heads: int                              # per layer
    mode: str                               # the single-head rows compared
    side: str
    paired: bool                            # two studies on the same queries and candidates
    pairing: str                            # why the per-query test was or was not possible, said plainly
    pairs: list[dict] = field(default_factory=list)           # every pair of studies: paired, and why
    baseline_test: dict = field(default_factory=dict)         # paired: B's baseline against A's
    correction: str = "holm"
    alpha: float = 0.05
    n_heads: int = 0                        # heads compared (those both maps have)
    gained: list[str] = field(default_factory=list)           # paired: significantly more important in B
    lost: list[str] = field(default_factory=list)
    correlations: list[dict] = field(default_factory=list)    # correlations.csv's rows
    overlaps: list[dict] = field(default_factory=list)        # overlap.csv's rows
