"""`codebert-heads evaluate`: the baseline retrieval evaluation of an encoder on a corpus."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig

from codesearch.metrics import ProtocolResult
from heads.encoder import Encoder, load_encoder
from heads.retrieval import RetrievalSettings, rank_task

from .data import load_data
from .runs import begin_run, package_versions, run_dir, study_dir, study_name, write_config, write_csv, write_json
from .study_cache import baseline_embeddings
from .tracking import RunLog, log_run, provenance


def retrieval_settings(cfg: DictConfig) -> RetrievalSettings:
    return RetrievalSettings(
        max_query_length=cfg.model.max_query_length, max_code_length=cfg.model.max_code_length,
        batch_size=cfg.model.batch_size, protocol=str(cfg.eval.protocol), rank_cutoff=cfg.eval.rank_cutoff,
        csn_batch_size=cfg.eval.csn_batch_size,
    )


def encoder_from_config(cfg: DictConfig) -> Encoder:
    return load_encoder(cfg.model.name, pooling=str(cfg.model.pooling), normalize=cfg.model.normalize,
                        device=cfg.model.device)


def prepare_torch(cfg: DictConfig) -> None:
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)


def per_query_frame(result: ProtocolResult, query_ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"query_id": [query_ids[i] for i in result.query_index],
                         "rr": result.rr, "rank": result.ranks})


def run_evaluate(cfg: DictConfig) -> Path:
    started = time.perf_counter()
    prepare_torch(cfg)
    out = run_dir(cfg, "evaluate")
    data = load_data(cfg)
    encoder = encoder_from_config(cfg)
    settings = retrieval_settings(cfg)
    embeddings = baseline_embeddings(cfg, encoder, data.task, settings)
    results = rank_task(embeddings, data.task, settings)
    primary = results[settings.protocol]

    begin_run(out, "metrics.json", ("per_query*.csv", "config.yaml"))
    write_config(out / "config.yaml", cfg)
    write_csv(out / "per_query.csv", per_query_frame(primary, data.task.query_ids))
    for protocol, result in results.items():
        if protocol != settings.protocol:
            write_csv(out / f"per_query_{protocol}.csv", per_query_frame(result, data.task.query_ids))
    metrics = {
        **primary.summary(),
        "n_candidates": len(data.task.candidates),
        "protocols": {p: r.summary() for p, r in results.items()},
        "model": encoder.info.name,
        "model_revision": encoder.info.revision,
        "recipe": encoder.info.recipe,
        "data": {"source": data.task.source, "form": data.task.form, "language": str(cfg.data.language),
                 "split": str(cfg.data.split)},
        "corpus_hash": data.corpus_hash,
        "task_fingerprint": data.task.fingerprint(),
        "seed": cfg.seed,
        "versions": package_versions(),
        "wall_time_s": round(time.perf_counter() - started, 3),
    }
    write_json(out / "metrics.json", metrics)  # last: its presence marks a finished run
    print_summary(metrics, out)
    log_run(cfg, study_name(cfg), study_dir(cfg), baseline_log(out, metrics, data, encoder, study_name(cfg)))
    return out


def baseline_log(out: Path, metrics: dict, data, encoder, study: str) -> RunLog:
    keys = ("mrr", "recall_at_1", "recall_at_5", "recall_at_10", "n_queries")
    summary = {f"eval/{k}": metrics[k] for k in keys}
    for protocol, values in metrics["protocols"].items():
        summary.update({f"eval/{protocol}/{k}": values[k] for k in keys})
    return RunLog(
        job_type="baseline", name=f"baseline-{metrics['protocol']}", results_dir=out, summary=summary,
        tags=["baseline"], **provenance(data, encoder, study))


def print_summary(metrics: dict, out: Path) -> None:
    print(f"{metrics['model']} on {metrics['data']['source']} ({metrics['data']['split']}), "
          f"{metrics['n_queries']} queries, {metrics['n_candidates']} candidates")
    for protocol, summary in metrics["protocols"].items():
        print(f"  {protocol:>10}: MRR {summary['mrr']:.4f}  R@1 {summary['recall_at_1']:.3f}  "
              f"R@5 {summary['recall_at_5']:.3f}  R@10 {summary['recall_at_10']:.3f}  "
              f"({summary['n_queries']} queries, {summary['candidates_per_query']} candidates each)")
    print(f"results: {out}")
