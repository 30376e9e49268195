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

from .cross_encoder import CrossEncoder
from .encoder import Encoder
from .models import retriever_for
from .pair_retrieval import PairSet, check_cross_protocol, pair_scores, pair_set
from .retrieval import rank, rank_task, task_embeddings
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
    kind: str = "bi_encoder"    # or cross_encoder
    n_pairs: int = 0            # cross-encoder: the (query, candidate) pairs scored
    retriever: dict = field(default_factory=dict)   # the bi-encoder beside it on the same queries and candidates
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
    pairs: PairSet | None = None         # a cross-encoder's scored pairs
    retriever: Encoder | None = None     # the bi-encoder beside a cross-encoder (eval.retriever)
    retriever_result: ProtocolResult | None = None   # its ranks under the same protocol, queries and candidates

    @classmethod
    def run(cls, encoder: Encoder, data: LoadedData, model: ModelConfig, evaluation: EvalConfig,
            cache_dir: Path | None, progress: bool = True) -> Evaluation:
        """Embed the task (the study's shared baseline) and rank it under every protocol; a cross-encoder scores the
        pairs of its protocol (`eval.protocol`) and is set beside `eval.retriever` when there is one."""
        check_cross_protocol(encoder, evaluation)
        if not isinstance(encoder, CrossEncoder):
            embeddings = task_embeddings(encoder, data.task, model, cache_dir, progress)
            return cls(encoder, data, rank_task(embeddings, data.task, evaluation))
        retriever = retriever_for(evaluation.retriever, model) if evaluation.retriever else None
        pairs = pair_set(data.task, evaluation, retriever=retriever, model=model, cache_dir=cache_dir,
                         progress=progress)
        scores = pair_scores(encoder, data.task, pairs, model, cache_dir=cache_dir, progress=progress)
        beside = beside_result(retriever, pairs, data.task, model, evaluation, cache_dir, progress) \
            if retriever is not None else None
        return cls(encoder, data, {pairs.protocol: pairs.ranks(scores)}, pairs, retriever, beside)

    def write(self, folder: Path) -> list[str]:
        """`per_query.csv` for the primary protocol, `per_query_<protocol>.csv` for the others, and a cross-encoder's
        retriever's `per_query_retriever.csv`."""
        files = []
        for index, (protocol, result) in enumerate(self.results.items()):
            name = "per_query.csv" if index == 0 else f"per_query_{protocol}.csv"
            atomic_write_csv(Path(folder) / name, per_query_frame(result, self.data.task.query_ids))
            files.append(name)
        if self.retriever_result is not None:
            atomic_write_csv(Path(folder) / "per_query_retriever.csv",
                             per_query_frame(self.retriever_result, self.data.task.query_ids))
            files.append("per_query_retriever.csv")
        return files

    def record(self, data: DataConfig, seed: int) -> EvaluationRecord:
        primary = next(iter(self.results.values()))
        info, task = self.encoder.info, self.data.task
        return EvaluationRecord(
            **asdict(primary.summary()), n_candidates=len(task.candidates),
            protocols={p: r.summary() for p, r in self.results.items()}, model=info.name,
            model_revision=info.revision, recipe=info.recipe, kind=self.encoder.kind,
            n_pairs=self.pairs.n_pairs if self.pairs is not None else 0, retriever=self.retriever_summary(),
            data={"source": task.source, "form": task.form, "language": str(data.language),
                  "split": str(data.split)}, corpus_hash=self.data.corpus_hash,
            task_fingerprint=task.fingerprint(), seed=seed)

    def retriever_summary(self) -> dict:
        if self.retriever is None:
            return {}
        return {"model": self.retriever.info.name, "revision": self.retriever.info.revision,
                "summary": asdict(self.retriever_result.summary())}


def beside_result(retriever: Encoder, pairs: PairSet, task, model: ModelConfig, evaluation: EvalConfig,
                  cache_dir: Path | None, progress: bool) -> ProtocolResult:
    """The bi-encoder's ranks on the same queries and candidates as the cross-encoder's protocol: its whole-pool
    ranking for whole_pool and rerank (the ranking rerank re-orders), its own CodeSearchNet batches for csn."""
    if pairs.first_stage is not None:
        return pairs.first_stage
    embeddings = task_embeddings(retriever, task, model, cache_dir, progress)
    protocol = "csn" if pairs.protocol == "csn" else "whole_pool"
    return rank(protocol, embeddings.queries, embeddings.candidates, task, evaluation)
