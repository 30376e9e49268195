"""`codebert-heads evaluate`: the baseline retrieval evaluation of an encoder on a corpus."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from codesearch.loading import load_data
from heads.evaluation import Evaluation, EvaluationRecord
from heads.models import encoder_for
from tracking.run_logs import baseline_log

from .config import as_sections
from .runs import Run, prepare_torch


def run_evaluate(cfg: DictConfig) -> Path:
    c = as_sections(cfg)
    prepare_torch(cfg)
    with Run(cfg, "evaluate", EvaluationRecord) as run:
        data = load_data(c.data, c.corpus, c.seed, c.progress)
        encoder = encoder_for(c.model)
        evaluation = Evaluation.run(encoder, data, c.model, c.eval, run.home, c.progress)
        run.begin()
        files = evaluation.write(run.work)
        record = evaluation.record(c.data, c.seed)
        record.wall_time_s = round(run.elapsed(), 3)
        run.finish(record, files)
        print_summary(record, run.folder)
        run.log(baseline_log(run.folder, record, data, encoder))
    return run.folder


def print_summary(record: EvaluationRecord, folder: Path) -> None:
    pairs = f", {record.n_pairs} pairs scored" if record.kind == "cross_encoder" else ""
    print(f"{record.model} ({record.kind}) on {record.data['source']} ({record.data['split']}), {record.n_queries} "
          f"queries, {record.n_candidates} candidates{pairs}")
    for protocol, summary in record.protocols.items():
        print(f"  {protocol:>10}: MRR {summary.mrr:.4f}  R@1 {summary.recall_at_1:.3f}  "
              f"R@5 {summary.recall_at_5:.3f}  R@10 {summary.recall_at_10:.3f}  "
              f"({summary.n_queries} queries, {summary.candidates_per_query} candidates each)")
    if record.retriever:
        beside = record.retriever["summary"]
        print(f"  beside it, the bi-encoder {record.retriever['model']} on the same queries and candidates "
              f"({beside['protocol']}): MRR {beside['mrr']:.4f}  R@1 {beside['recall_at_1']:.3f}  "
              f"R@10 {beside['recall_at_10']:.3f}")
    print(f"results: {folder}")
