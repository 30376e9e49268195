"""The record of an activation-patching run (`patch`'s run.json)."""
from __future__ import annotations

from dataclasses import dataclass, field

from codesearch.runfolder import RunRecord


@dataclass(kw_only=True)
class PatchRecord(RunRecord):
    model: str
    model_revision: str
    corpus_hash: str
    task_fingerprint: str
    n_examples: int
    best_head: str                                  # the head whose clean output restores the most
    ablation_run: str = ""                          # the ablation whose ΔMRR the fractions are correlated with
    findings: dict = field(default_factory=dict)    # the few numbers a reader looks for first
