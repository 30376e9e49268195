"""The record of a finished probing run (`probe`'s run.json)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from codesearch.errors import UserError
from codesearch.runfolder import RunRecord, run_folders


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


@dataclass
class FinishedProbes:
    folder: Path
    record: ProbeRecord
    table: pd.DataFrame     # probes.csv


def find_probes(study_dir: Path, chosen: str = "") -> FinishedProbes | None:
    """The study's probes: the `chosen` folder, else the study's newest finished probe run (None when none)."""
    folders = [Path(chosen).expanduser()] if chosen else sorted(
        run_folders(Path(study_dir) / "probe"), key=lambda path: -path.stat().st_mtime)
    for folder in folders:
        if ProbeRecord.is_finished(folder) and (folder / "probes.csv").is_file():
            return FinishedProbes(folder, ProbeRecord.read(folder), pd.read_csv(folder / "probes.csv"))
        if chosen:
            raise UserError(f"{folder} is no finished probe run (no {ProbeRecord.FILE} or probes.csv)")
    return None
