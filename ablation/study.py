"""An ablation study, from loaded data to the exported table.

    study = AblationStudy(encoder, ablation, model, evaluation, seed, cache_dir)   # the conditions, checked
    study.prepare(data, data_config, corpus_config)   # mean-mode data and the baseline: no folder touched yet
    study.run(folder, resume)                   # gradient scores, top-k, each condition's ranks saved when done
    files = study.export(folder)                # the paired statistics, corrected, and the report

The baseline is computed once per study and kept in `cache_dir` with the gradient scores, so a sweep's runs and a
resumed run share them. Each condition's per-query ranks come from the cached layer sweep on the same queries and
pool, and are saved as soon as they are known (`resume` continues from there).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from codesearch.errors import UserError
from codesearch.files import atomic_write_csv
from codesearch.loading import LoadedData
from codesearch.metrics import ProtocolResult
from codesearch.runfolder import Timings
from codesearch.settings import CorpusConfig, DataConfig
from heads.encoder import Encoder
from heads.naming import every_head
from heads.retrieval import rank, task_embeddings
from heads.settings import EvalConfig, ModelConfig

from .checkpoints import ConditionStore, rr_hash
from .conditions import Condition, build_conditions, top_k
from .engine import run_conditions
from .gradient import study_gradient_scores
from .means import held_out_means
from .record import AblationRecord, ModelFacts
from .report import ConditionResult, StudyFacts, gradient_agreement, importance_report, write_report
from .settings import AblationConfig
from .stats import unreachable_significance


class AblationStudy:
    """One ablation study; its results are attributes: `conditions`, `baseline` (the unmasked ranks), `grad`
    ([layers, heads] or None), `frame` (the importance table) and `per_query` (after `export`)."""

    def __init__(self, encoder: Encoder, ablation: AblationConfig, model: ModelConfig, evaluation: EvalConfig,
                 seed: int, cache_dir: Path, progress: bool = True, timings: Timings | None = None):
        """Builds the conditions and checks them: a bad head spec fails before any data is read. Each phase's
        time is added to `timings` (setup_s, baseline_s, gradient_s, ablation_s, statistics_s)."""
        self.encoder, self.ablation, self.model, self.evaluation = encoder, ablation, model, evaluation
        self.seed, self.cache_dir, self.progress = seed, Path(cache_dir), progress
        self.report_settings = ablation.report_settings(seed)
        self.timings = Timings() if timings is None else timings
        self.data = self.task = self.means = self.embeddings = self.baseline = self.grad = self.store = None
        self.frame = self.per_query = None
        a = ablation
        self.conditions = build_conditions(a.head_spec, a.per_head, encoder.n_layers, encoder.n_heads, a.mode, a.side)
        if a.top_k and not a.per_head:
            raise UserError("ablation.top_k picks single heads: it needs ablation.per_head=true")
        if a.top_k > len(self.conditions):
            print(f"note: ablation.top_k={a.top_k}, but the spec has {len(self.conditions)} heads: all of them are "
                  f"ablated", file=sys.stderr)
        warning = unreachable_significance(min(a.top_k or len(self.conditions), len(self.conditions)),
                                           self.report_settings)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)

    def prepare(self, data: LoadedData, data_config: DataConfig, corpus_config: CorpusConfig) -> None:
        """Mean-mode data (checked first), then the baseline (once per study)."""
        self.data, self.task = data, data.task
        with self.timings.phase("setup_s"):
            if self.ablation.mode == "mean":
                self.means = held_out_means(self.encoder, self.task, data_config, corpus_config, self.ablation,
                                            self.model, self.seed, self.progress)
        with self.timings.phase("baseline_s"):
            print(f"baseline: {len(self.task)} queries, {len(self.task.candidates)} candidates", file=sys.stderr)
            self.embeddings = task_embeddings(self.encoder, self.task, self.model, self.cache_dir, self.progress)
            self.baseline = self._ranks(self.embeddings.queries, self.embeddings.candidates)

    def _ranks(self, queries, candidates) -> ProtocolResult:
        return rank(self.evaluation.protocol, queries, candidates, self.task, self.evaluation)

    def signature(self) -> dict:
        """Everything that decides a condition's per-query ranks: a resume must match it."""
        info, m, a = self.encoder.info, self.model, self.ablation
        signature = {
            "task": self.task.fingerprint(), "model": info.name, "revision": info.revision, "recipe": info.recipe,
            "model_settings": {"max_query_length": m.max_query_length, "max_code_length": m.max_code_length,
                               "batch_size": m.batch_size},
            "eval": {"protocol": str(self.evaluation.protocol), "rank_cutoff": self.evaluation.rank_cutoff,
                     "csn_batch_size": self.evaluation.csn_batch_size},
            "mode": str(a.mode), "side": str(a.side), "baseline_rr": rr_hash(self.baseline.rr),
        }
        if a.mode == "mean":
            signature["mean_set"] = {"mean_split": str(a.mean_split), "mean_samples": a.mean_samples}
            signature["seed"] = self.seed
        return signature

    def run(self, folder: Path, resume: bool, finished: Path | None = None) -> None:
        """Gradient scores (and the top-k choice), then every condition not yet done, each saved when done into
        `folder/conditions`; a resume continues from the conditions there or, failing those, from the `finished`
        run's."""
        a = self.ablation
        previous = Path(finished) / "conditions" if finished is not None else None
        store = ConditionStore(Path(folder) / "conditions", self.signature(), resume=resume, finished=previous)
        if a.gradient:
            with self.timings.phase("gradient_s"):
                self.grad = study_gradient_scores(self.encoder, self.task, self.embeddings, self.model,
                                                  a.grad_temperature, str(a.side), self.cache_dir, self.progress)
            if a.top_k:
                self.conditions = top_k(self.conditions, self.grad, a.top_k)
        with self.timings.phase("ablation_s"):
            pending = [c for c in self.conditions if not store.done(c.name)]
            if len(pending) < len(self.conditions):
                print(f"resuming: {len(self.conditions) - len(pending)} of {len(self.conditions)} conditions "
                      f"already done", file=sys.stderr)

            def save(condition: Condition, query_emb, code_emb):
                result = self._ranks(self.embeddings.queries if query_emb is None else query_emb,
                                     self.embeddings.candidates if code_emb is None else code_emb)
                store.save(condition.name, {"rr": result.rr.tolist(), "rank": result.ranks.tolist()})

            run_conditions(self.encoder, self.task.queries, self.task.candidates, pending, save, self.model,
                           means=self.means, max_cache_gb=a.max_cache_gb, progress=self.progress)
        self.store = store

    def export(self, folder: Path) -> list[str]:
        """The statistics of every condition against the baseline, corrected over all, written as the report
        (and every head's gradient score); returns the file names."""
        folder = Path(folder)
        with self.timings.phase("statistics_s"):
            query_ids = [self.task.query_ids[i] for i in self.baseline.query_index]
            results = [ConditionResult(c, np.asarray(self.store.load(c.name)["rr"]), c.grad_score(self.grad))
                       for c in self.conditions]
            self.frame, self.per_query = importance_report(self.baseline.rr, results, query_ids,
                                                           self.report_settings)
            files = write_report(folder, self.frame, self.per_query, self.facts(), self.report_settings,
                                 self.encoder.n_layers, self.encoder.n_heads)
            if self.grad is not None:
                atomic_write_csv(folder / "grad_scores.csv", self.grad_frame())
                files.append("grad_scores.csv")
        return files

    def facts(self) -> StudyFacts:
        return StudyFacts(model=self.encoder.info.name, baseline_mrr=self.baseline.mrr,
                          n_queries=len(self.baseline.rr), protocol=self.baseline.protocol,
                          candidates_per_query=self.baseline.candidates_per_query,
                          modes=(str(self.ablation.mode),), sides=(str(self.ablation.side),))

    def grad_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"condition": h.name, "layer": h.layer, "head": h.index,
                              "grad_score": self.grad[h.layer, h.index]}
                             for h in every_head(self.encoder.n_layers, self.encoder.n_heads)])

    def record(self) -> AblationRecord:
        """The run's record: what the study measured and on what (the run fills in config, files, timings)."""
        task, a = self.task, self.ablation
        info = self.encoder.info
        return AblationRecord(
            model=ModelFacts(name=info.name, revision=info.revision, recipe=info.recipe, layers=self.encoder.n_layers,
                             heads=self.encoder.n_heads, head_dim=self.encoder.head_dim),
            data={"source": task.source, "form": task.form, "n_queries": len(task),
                  "n_candidates": len(task.candidates)},
            corpus_hash=self.data.corpus_hash, task_fingerprint=task.fingerprint(), protocol=self.baseline.summary(),
            baseline_mrr=self.baseline.mrr, n_conditions=len(self.conditions),
            n_significant=int(self.frame["significant"].sum()), correction=str(a.correction),
            primary_test=str(a.primary_test), alpha=a.alpha, gradient_vs_exact=gradient_agreement(self.frame))
