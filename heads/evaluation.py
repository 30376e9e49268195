"""The baseline retrieval evaluation: a task's ranks under both protocols, its per-query files and its record."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from codesearch.files import atomic_write_csv
from codesearch.loading import LoadedData
from codesearch.metrics import ProtocolResult, ProtocolSummary
from codesearch.runfolder import RunRecord
from codesearch.settings import DataConfig

from .encoder import Encoder
from .retrieval import rank_task, task_embeddings
from .settings import EvalConfig, ModelConfig


@dataclass(kw_only=True)
class EvaluationRecord(RunRecord, ProtocolSummary):
    """`evaluate`'s metrics.json: the primary protocol's summary at the top, every protocol under `protocols`."""
    FILE = "metrics.json"
    n_candidates: int
    protocols: dict[str, ProtocolSummary] = field(default_factory=dict)
    model: str
    model_revision: str
    recipe: dict
    data: dict                  # source, form, language, split
    corpus_hash: str
    task_fingerprint: str
    seed: int
    wall_time_s: float = 0.0


def per_query_frame(result: ProtocolResult, query_ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"query_id": [query_ids[i] for i in result.query_index],
                         "rr": result.rr, "rank": result.ranks})


@dataclass
class Evaluation:
    encoder: Encoder
    data: LoadedData
    results: dict[str, ProtocolResult]   # the primary protocol first

    @classmethod
    def run(cls, encoder: Encoder, data: LoadedData, model: ModelConfig, evaluation: EvalConfig,
            cache_dir: Path, progress: bool = True) -> Evaluation:
        """Embed the task (the study's shared baseline) and rank it under every protocol."""
        embeddings = task_embeddings(encoder, data.task, model, cache_dir, progress)
        return cls(encoder, data, rank_task(embeddings, data.task, evaluation))

    def write(self, folder: Path) -> list[str]:
        """`per_query.csv` for the primary protocol, `per_query_<protocol>.csv` for the others."""
        files = []
        for index, (protocol, result) in enumerate(self.results.items()):
            name = "per_query.csv" if index == 0 else f"per_query_{protocol}.csv"
            atomic_write_csv(Path(folder) / name, per_query_frame(result, self.data.task.query_ids))
            files.append(name)
        return files

    def record(self, data: DataConfig, seed: int) -> EvaluationRecord:
        primary = next(iter(self.results.values()))
        info, task = self.encoder.info, self.data.task
        return EvaluationRecord(
            **asdict(primary.summary()), n_candidates=len(task.candidates),
            protocols={p: r.summary() for p, r in self.results.items()}, model=info.name,
            model_revision=info.revision, recipe=info.recipe,
            data={"source": task.source, "form": task.form, "language": str(data.language),
                  "split": str(data.split)}, corpus_hash=self.data.corpus_hash,
            task_fingerprint=task.fingerprint(), seed=seed)
