"""The records of finished ablation runs (`ablate`, `aggregate`), written last into their folders, and reading such
a run back: aggregation and the probes' join read exactly what the commands wrote."""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from codesearch.errors import UserError
from codesearch.metrics import ProtocolSummary
from codesearch.runfolder import RunRecord, run_folders


@dataclass
class ModelFacts:
    name: str
    revision: str
    recipe: dict
    layers: int
    heads: int          # per layer
    head_dim: int


@dataclass(kw_only=True)
class ImportanceRecord(RunRecord):
    """What a folder holding an importance table records: the model, the baseline and the statistics."""
    model: ModelFacts
    corpus_hash: str
    task_fingerprint: str
    protocol: ProtocolSummary
    baseline_mrr: float
    n_conditions: int
    n_significant: int
    correction: str
    primary_test: str
    alpha: float
    gradient_vs_exact: list[dict] = field(default_factory=list)


@dataclass(kw_only=True)
class AblationRecord(ImportanceRecord):
    """`ablate`'s run.json."""
    data: dict = field(default_factory=dict)     # source, form, n_queries, n_candidates
    shard: str | None = None                     # i/n: this run's share of the conditions
    precision: dict = field(default_factory=dict)   # the precision, and in reduced precision its ranks against fp32
    memory: dict = field(default_factory=dict)      # the plan (bytes, layout) and the measured peak
    time_estimate: dict = field(default_factory=dict)   # seconds, from the first batches


@dataclass(kw_only=True)
class AggregateRecord(ImportanceRecord):
    """`aggregate`'s run.json."""
    sources: list[str] = field(default_factory=list)
    n_runs: int = 0
    report_settings: dict = field(default_factory=dict)
    report_settings_from: dict = field(default_factory=dict)


@dataclass(kw_only=True)
class SetStudyRecord(RunRecord):
    """What a folder of head-set tables records (`prune`, and `aggregate` over prune runs)."""
    model: ModelFacts
    corpus_hash: str
    task_fingerprint: str
    protocol: ProtocolSummary
    baseline_mrr: float
    correction: str
    primary_test: str
    alpha: float
    findings: dict = field(default_factory=dict)   # the cited numbers: fractions keeping 95%, best row, pairs


@dataclass(kw_only=True)
class PruneRecord(SetStudyRecord):
    """`prune`'s run.json."""
    data: dict = field(default_factory=dict)
    mode: str = "zero"
    side: str = "both"
    n_heads: int = 0                 # heads pruned among
    orders: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)   # heads pruned at each point
    n_sets: int = 0
    exact_source: str | None = None  # the ablation whose single-head ΔMRR gave the exact order and ranking
    shard: str | None = None
    precision: dict = field(default_factory=dict)
    memory: dict = field(default_factory=dict)
    time_estimate: dict = field(default_factory=dict)


@dataclass(kw_only=True)
class SetAggregateRecord(SetStudyRecord):
    """`aggregate`'s run.json over a study's prune runs (`aggregate-prune/`)."""
    sources: list[str] = field(default_factory=list)
    n_runs: int = 0
    report_settings: dict = field(default_factory=dict)
    report_settings_from: dict = field(default_factory=dict)


@dataclass
class FinishedAblation:
    """A finished ablation or aggregate folder, read back: its record, its importance table and (when asked for)
    its per-query reciprocal ranks."""
    folder: Path
    record: ImportanceRecord
    table: pd.DataFrame        # importance.csv

    @classmethod
    def read(cls, folder: Path, record_type: type[ImportanceRecord] = ImportanceRecord) -> FinishedAblation:
        folder = Path(folder)
        record = record_type.read(folder)
        return cls(folder, record, pd.read_csv(_result_file(folder, "importance.csv")))

    @functools.cached_property
    def per_query(self) -> pd.DataFrame:
        return pd.read_csv(_result_file(self.folder, "per_query.csv"), dtype={"query_id": str},
                           keep_default_na=False)

    def single_heads(self, mode: str = "zero", side: str = "both") -> pd.DataFrame:
        """The table's one-head rows masked this way."""
        singles = self.table.dropna(subset=["layer", "head"])
        return singles[(singles["mode"] == mode) & (singles["side"] == side)]


def _result_file(folder: Path, name: str) -> Path:
    if not (folder / name).is_file():
        raise UserError(f"{folder}: a finished run without {name}")
    return folder / name


def find_ablation(study_dir: Path, chosen: str = "", mode: str = "zero", side: str = "both",
                  heads=None) -> FinishedAblation | None:
    """The study's single-head ablation (by default zero mask, both sides): the `chosen` folder, else the study's
    aggregate, else its newest ablation run that has such heads (with `heads`, HeadIds: all of them, where one
    has)."""
    if chosen:
        folder = Path(chosen).expanduser()
        if not (folder / "importance.csv").is_file():
            raise UserError(f"{folder} has no importance.csv: no finished ablation to join with")
        candidates = [folder]
    else:
        newest_first = sorted(run_folders(Path(study_dir) / "ablate"), key=lambda path: -path.stat().st_mtime)
        candidates = [Path(study_dir) / "aggregate", *newest_first]
    partial = None   # with `heads`: a map lacking some, for the error that names them
    for folder in candidates:
        if not (ImportanceRecord.is_finished(folder) and (folder / "importance.csv").is_file()):
            continue
        try:
            finished = FinishedAblation.read(folder)
        except UserError as exc:
            if chosen:
                raise
            print(f"note: {exc}; looking further", file=sys.stderr)
            continue
        singles = finished.single_heads(mode, side)
        if not len(singles):
            continue
        if heads is None or chosen or {(h.layer, h.index) for h in heads} <= {
                (int(layer), int(head)) for layer, head in zip(singles["layer"], singles["head"])}:
            return finished
        partial = partial or finished
    return partial if heads is not None else None
