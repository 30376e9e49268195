"""`report`'s run.json."""
from __future__ import annotations

from dataclasses import dataclass, field

from codesearch.runfolder import RunRecord


@dataclass(kw_only=True)
class ReportRecord(RunRecord):
    study_folder: str
    sections: list[str] = field(default_factory=list)   # the kinds of runs shown
    missing: list[str] = field(default_factory=list)    # the kinds the study lacks
    sources: list[str] = field(default_factory=list)    # the run folders read
    wandb_report: str = ""                              # the W&B Report's URL, when published
