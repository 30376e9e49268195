"""The records of finished ablation runs (`ablate`, `aggregate`), written last into their folders, and reading such
a run back: aggregation and the probes' join read exactly what the commands wrote."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from codesearch.errors import UserError
from codesearch.metrics import ProtocolSummary
from codesearch.runfolder import RunRecord


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


@dataclass(kw_only=True)
class AggregateRecord(ImportanceRecord):
    """`aggregate`'s run.json."""
    sources: list[str] = field(default_factory=list)
    n_runs: int = 0
    report_settings: dict = field(default_factory=dict)
    report_settings_from: dict = field(default_factory=dict)


@dataclass
class FinishedAblation:
    """A finished ablation or aggregate folder, read back."""
    folder: Path
    record: ImportanceRecord
    table: pd.DataFrame        # importance.csv
    per_query: pd.DataFrame    # per_query.csv

    @classmethod
    def read(cls, folder: Path, record_type: type[ImportanceRecord] = ImportanceRecord) -> FinishedAblation:
        folder = Path(folder)
        record = record_type.read(folder)
        for name in ("importance.csv", "per_query.csv"):
            if not (folder / name).is_file():
                raise UserError(f"{folder}: a finished run without {name}")
        per_query = pd.read_csv(folder / "per_query.csv", dtype={"query_id": str}, keep_default_na=False)
        return cls(folder, record, pd.read_csv(folder / "importance.csv"), per_query)

    def single_heads(self, mode: str = "zero", side: str = "both") -> pd.DataFrame:
        """The table's one-head rows masked this way."""
        singles = self.table.dropna(subset=["layer", "head"])
        return singles[(singles["mode"] == mode) & (singles["side"] == side)]
