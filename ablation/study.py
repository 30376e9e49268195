"""An ablation study, from loaded data to the exported table.

    study = AblationStudy(encoder, ablation, model, evaluation, seed, cache_dir)   # the conditions, checked
    study.prepare(data, data_config, corpus_config)   # the plan (memory, time), then the baseline: no folder touched
    study.run(folder, resume)                   # gradient scores, top-k, shard, each condition's ranks saved when done
    files = study.export(folder)                # the paired statistics, corrected, and the report

The work is planned before any long pass (`ablation.plan`): a memory budget the ablation cannot keep to is refused
before the baseline, and the time is estimated from the first batches. The baseline is computed once per study and
kept in `cache_dir` with the gradient scores, so a sweep's runs, a job array's shards and a resumed run share them.
Each condition's per-query ranks come from the cached layer sweep on the same queries and pool, and are saved as
soon as they are known (`resume` continues from there). In reduced precision the baseline and the first condition
are also ranked in fp32, and how many ranks differ is recorded.
"""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from codesearch.errors import UserError
from codesearch.files import atomic_write_csv
from codesearch.loading import LoadedData
from codesearch.metrics import ProtocolResult
from codesearch.runfolder import Timings
from codesearch.settings import CorpusConfig, DataConfig
from heads.encoder import Encoder
from heads.memory import peak_process_bytes
from heads.models import set_precision
from heads.naming import every_head
from heads.retrieval import Embeddings, baseline_cached, rank, task_embeddings
from heads.settings import EvalConfig, ModelConfig

from .checkpoints import ConditionStore, rr_hash
from .conditions import Condition, build_conditions, shard, top_k
from .engine import run_conditions, side_inputs
from .gradient import gradient_cached, study_gradient_scores
from .means import held_out_means
from .plan import estimate_time, memory_budget, plan_memory, report_plan, time_per_layer_token
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
        self.frame = self.per_query = self.inputs = self.plan = self.estimate = None
        self.precision_agreement: dict | None = None
        a = ablation
        if a.precision == "tf32" and encoder.device.type != "cuda":
            raise UserError(f"ablation.precision=tf32 is a CUDA mode, but the model runs on {encoder.device}: use "
                            f"fp32 or bf16, or model.device=cuda")
        self.conditions = build_conditions(a.head_spec, a.per_head, encoder.n_layers, encoder.n_heads, a.mode, a.side)
        if a.top_k and not a.per_head:
            raise UserError("ablation.top_k picks single heads: it needs ablation.per_head=true")
        if a.top_k > len(self.conditions):
            print(f"note: ablation.top_k={a.top_k}, but the spec has {len(self.conditions)} heads: all of them are "
                  f"ablated", file=sys.stderr)
        count = min(a.top_k or len(self.conditions), len(self.conditions))
        if a.shard_of and a.shard_of[0] > count:
            raise UserError(f"ablation.shard={a.shard}: this run has only {count} condition{'s' * (count != 1)}, so "
                            f"shard {a.shard_of[0]} of {a.shard_of[1]} would be empty; use at most {count} shards")
        warning = unreachable_significance(count, self.report_settings)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)

    def prepare(self, data: LoadedData, data_config: DataConfig, corpus_config: CorpusConfig) -> None:
        """Mean-mode data (checked first), the plan (refused when the memory budget cannot hold it), then the
        baseline (once per study; in reduced precision, the fp32 agreement first)."""
        self.data, self.task = data, data.task
        m, a = self.model, self.ablation
        with self.timings.phase("setup_s"):
            if a.mode == "mean":
                self.means = self._held_out_means(data_config, corpus_config)
            self.inputs = self._side_inputs()
            self.plan = self._plan(str(a.precision), a.gradient_wanted)
            check = min(self.conditions, key=lambda c: c.first_layer)   # the precision check's condition
            fp32_plan = self.plan if a.precision == "fp32" else self._fp32_plan(check)
            self.estimate = self._estimate(check)
            report_plan(self.plan, self.estimate)
        with self.timings.phase("baseline_s"):
            print(f"baseline: {len(self.task)} queries, {len(self.task.candidates)} candidates", file=sys.stderr)
            if a.precision != "fp32":
                reference = self._fp32_reference(fp32_plan, check)
                set_precision(self.encoder, str(a.precision))
            self.embeddings = self._baseline_outputs()
            self.baseline = self._ranks_of(self.embeddings)
            if a.precision != "fp32":
                self.precision_agreement = self._agreement(reference)

    def _plan(self, precision: str, gradient: bool = False, conditions: list[Condition] | None = None):
        element = 2 if precision == "bf16" else 4
        budget = memory_budget(self.ablation.max_memory_gb, self.encoder.device)
        return plan_memory(self.encoder, self.inputs, conditions or self.conditions, budget, element, gradient)

    def _fp32_plan(self, check: Condition):
        """The plan of the precision check's condition in fp32 (twice the cache of bf16)."""
        try:
            return self._plan("fp32", conditions=[check])
        except UserError as exc:
            raise UserError(f"ablation.precision={self.ablation.precision} is checked against fp32 on the baseline "
                            f"and {check.name}, and that check does not fit: {exc}") from None

    def _estimate(self, check: Condition):
        """The time estimate, before any long pass: the conditions this run will ablate (its shard; for top_k, as
        many as it keeps), the baselines and gradient not yet cached, the precision check."""
        a = self.ablation
        conditions = self.conditions[:a.top_k or None]
        if a.shard_of:
            conditions = shard(conditions, *a.shard_of)
        return self._estimate_of(check, conditions)

    def _estimate_of(self, check: Condition, conditions: list[Condition]):
        """The time estimate of ablating `conditions`, with the baselines and gradient not yet cached and the
        precision check."""
        a, m = self.ablation, self.model
        precision = str(a.precision)
        passes = int(not self._baseline_cached(precision))
        if precision != "fp32":
            passes += int(not self._baseline_cached("fp32"))
        gradient_sides = () if not a.gradient_wanted or self._gradient_cached(precision) else \
            tuple(s for s in self.inputs if check.affects(s))
        checks = (check, check) if precision != "fp32" else ()
        return estimate_time(self.encoder, self.inputs, conditions, self.plan, passes, gradient_sides,
                             time_per_layer_token(self.encoder, self.inputs), checks)

    # -- what the retrieval's shape decides (a cross-encoder's study overrides these: ablation.cross_study)
    def _side_inputs(self) -> dict:
        """The sides the engine walks: queries and code, each tokenized into its length-sorted batches."""
        m = self.model
        return {"query": side_inputs(self.encoder, self.task.queries, m.max_query_length, m.batch_size),
                "code": side_inputs(self.encoder, self.task.candidates, m.max_code_length, m.batch_size)}

    def _held_out_means(self, data_config: DataConfig, corpus_config: CorpusConfig) -> dict:
        return held_out_means(self.encoder, self.task, data_config, corpus_config, self.ablation, self.model,
                              self.seed, self.progress)

    def _baseline_cached(self, precision: str) -> bool:
        return baseline_cached(self.encoder, self.task, self.model, self.cache_dir, precision)

    def _gradient_cached(self, precision: str) -> bool:
        a = self.ablation
        return gradient_cached(self.encoder, self.task, self.model, a.grad_temperature, str(a.side), self.cache_dir,
                               precision)

    def _baseline_outputs(self) -> Embeddings:
        """The unmasked embeddings, on the device the scores are computed on."""
        cpu = task_embeddings(self.encoder, self.task, self.model, self.cache_dir, self.progress)
        return Embeddings(cpu.queries.to(self.encoder.device), cpu.candidates.to(self.encoder.device))

    def _ranks_of(self, outputs: Embeddings) -> ProtocolResult:
        return rank(self.evaluation.protocol, outputs.queries, outputs.candidates, self.task, self.evaluation,
                    block_rows=self.plan.score_rows)

    def _run_engine(self, conditions: list[Condition], on_outputs, layout, progress: bool) -> None:
        """Each condition through the engine; `on_outputs(condition, outputs)` gets its outputs whole (the sides it
        leaves alone from the baseline)."""
        def whole(condition: Condition, query_emb, code_emb):
            on_outputs(condition, Embeddings(self.embeddings.queries if query_emb is None else query_emb,
                                             self.embeddings.candidates if code_emb is None else code_emb))
        run_conditions(self.encoder, self.inputs["query"], self.inputs["code"], conditions, whole, self.means,
                       layout, progress)

    def _check_ranks(self, condition: Condition, layout) -> ProtocolResult:
        """One condition's ranks, computed apart from the run (the precision check)."""
        got = {}
        self._run_engine([condition], lambda _c, outputs: got.update(outputs=outputs), layout, progress=False)
        return self._ranks_of(got["outputs"])

    def _fp32_reference(self, fp32_plan, check: Condition) -> dict:
        """The baseline's and the check condition's ranks in fp32, before the encoder leaves it."""
        self.embeddings = self._baseline_outputs()
        print(f"precision check: the baseline and {check.name} in fp32", file=sys.stderr)
        return {"baseline": self._ranks_of(self.embeddings),
                "condition": check, "condition_fp32": self._check_ranks(check, fp32_plan.layout)}

    def _agreement(self, reference: dict) -> dict:
        """How many ranks the run's precision changes against fp32, for the baseline and one condition."""
        check = reference["condition"]
        reduced = self._check_ranks(check, self.plan.layout)

        def compare(fp32: ProtocolResult, other: ProtocolResult) -> dict:
            return {"n_queries": int(len(fp32.ranks)), "ranks_differing": int((fp32.ranks != other.ranks).sum()),
                    "max_rank_change": int(np.abs(fp32.ranks - other.ranks).max(initial=0)),
                    "mrr_fp32": fp32.mrr, "mrr": other.mrr}
        agreement = {"precision": str(self.ablation.precision),
                     "baseline": compare(reference["baseline"], self.baseline),
                     "condition": {"name": check.name, **compare(reference["condition_fp32"], reduced),
                                   "delta_mrr_fp32": reference["condition_fp32"].mrr - reference["baseline"].mrr,
                                   "delta_mrr": reduced.mrr - self.baseline.mrr}}
        b, c = agreement["baseline"], agreement["condition"]
        print(f"precision {agreement['precision']} against fp32: {b['ranks_differing']} of {b['n_queries']} baseline "
              f"ranks differ (MRR {b['mrr_fp32']:.4f} -> {b['mrr']:.4f}); {check.name}: {c['ranks_differing']} "
              f"differ, ΔMRR {c['delta_mrr_fp32']:+.4f} -> {c['delta_mrr']:+.4f}", file=sys.stderr)
        return agreement

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
            "precision": str(a.precision),
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
        self.store = self._open_store(folder, resume, finished)
        if a.gradient_wanted:
            self._study_gradient()
            if a.top_k:
                self.conditions = top_k(self.conditions, self.grad, a.top_k)
        if a.shard_of:
            self.conditions = shard(self.conditions, *a.shard_of)
            print(f"shard {a.shard}: {len(self.conditions)} conditions; its table is corrected over these only, "
                  f"`aggregate` over the shards gives the study's", file=sys.stderr)
        with self.timings.phase("ablation_s"):
            self.measure(self.conditions)

    def _open_store(self, folder: Path, resume: bool, finished: Path | None) -> ConditionStore:
        previous = Path(finished) / "conditions" if finished is not None else None
        return ConditionStore(Path(folder) / "conditions", self.signature(), resume=resume, finished=previous)

    def _study_gradient(self) -> None:
        a = self.ablation
        with self.timings.phase("gradient_s"):
            self.grad = study_gradient_scores(self.encoder, self.task, self.embeddings, self.model,
                                              a.grad_temperature, str(a.side), self.cache_dir, self.progress,
                                              block_rows=self.plan.score_rows)

    def measure(self, conditions: list[Condition], keep=None, note: bool = True) -> None:
        """Each condition not yet in the store, ablated exactly and its per-query ranks saved as soon as known;
        `keep(condition, embeddings)` also gets its embeddings (the unmasked side's from the baseline); `note`: say
        how many were done already."""
        pending = [c for c in conditions if not self.store.done(c.name)]
        if note and len(pending) < len(conditions):
            print(f"resuming: {len(conditions) - len(pending)} of {len(conditions)} conditions already done",
                  file=sys.stderr)

        def save(condition: Condition, outputs):
            result = self._ranks_of(outputs)
            self.store.save(condition.name, {"rr": result.rr.tolist(), "rank": result.ranks.tolist()})
            if keep is not None:
                keep(condition, outputs)

        self._run_engine(pending, save, self.plan.layout, self.progress)

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
        return AblationRecord(
            model=self.model_facts(),
            data={"source": task.source, "form": task.form, "n_queries": len(task),
                  "n_candidates": len(task.candidates), "kind": self.encoder.kind},
            corpus_hash=self.data.corpus_hash, task_fingerprint=task.fingerprint(), protocol=self.baseline.summary(),
            baseline_mrr=self.baseline.mrr, n_conditions=len(self.conditions),
            n_significant=int(self.frame["significant"].sum()), correction=str(a.correction),
            primary_test=str(a.primary_test), alpha=a.alpha, gradient_vs_exact=gradient_agreement(self.frame),
            shard=a.shard, precision=self.precision_agreement or {"precision": str(a.precision)},
            memory={**self.plan.summary(), "measured_peak": self.measured_peak()},
            time_estimate=asdict(self.estimate))

    def model_facts(self) -> ModelFacts:
        info = self.encoder.info
        return ModelFacts(name=info.name, revision=info.revision, recipe=info.recipe, layers=self.encoder.n_layers,
                          heads=self.encoder.n_heads, head_dim=self.encoder.head_dim)

    def measured_peak(self) -> int:
        """The largest memory the run has held: the process's resident set, or on a GPU the device's allocations."""
        if self.encoder.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.encoder.device))
        return peak_process_bytes()
