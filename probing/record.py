"""The record of a finished probing run (`probe`'s run.json)."""
from __future__ import annotations

from dataclasses import dataclass, field

from codesearch.runfolder import RunRecord


@dataclass(kw_only=True)
class ProbeRecord(RunRecord):
    tasks: list[str]
    skipped_tasks: dict[str, str] = field(default_factory=dict)    # task -> why
    seeds: list[int] = field(default_factory=list)
    model: str = ""
    model_revision: str = ""
    corpus_hash: str = ""
    n_functions: dict[str, int] = field(default_factory=dict)      # per split
    ablation_join: dict = field(default_factory=dict)              # source, and per task the correlation
