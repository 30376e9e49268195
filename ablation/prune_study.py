"""A head-set study: pruning curves, one head per layer, pairwise interactions and Shapley values, measured exactly
through the ablation engine against the study's baseline.

    study = PruneStudy(encoder, ablation, prune, model, evaluation, seed, study_dir)  # sources and plan, checked
    study.prepare(data, data_config, corpus_config)    # the memory plan, the time estimate, the baseline
    study.run(folder, resume)      # the gradient, the sets, each saved when done; then the iterative order
    files = study.export(folder)   # the tables, corrected per table, and the figures

It is an ablation study whose conditions are head sets (`ablation.head_sets` plans them; a set reruns from its
lowest layer): the baseline, the memory plan, the precision check, the cached gradient, the resumable store of
finished sets and the paired statistics are the single-head study's own. The heads pruned among are
`ablation.heads`; masking follows `ablation.mode` and `ablation.side`.

Two parts depend on what was measured before them, so they run after the rest, and in one run (not in shards):
Michel et al.'s iterative order (the gradient re-estimated after each step with the pruned heads masked; each
step's scores are kept in the store, so a resume repeats none) and the one-head-per-layer row that keeps each
layer's best head.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from codesearch.errors import UserError
from codesearch.runfolder import Timings
from heads.encoder import Encoder
from heads.hooks import HeadMask
from heads.naming import HeadId
from heads.retrieval import Embeddings
from heads.settings import EvalConfig, ModelConfig

from .conditions import SIDES_OF, Condition, shard
from .gradient import gradient_scores
from .head_sets import (
    SetPlan,
    best_choice,
    curve_points,
    exact_importance,
    gradient_importance,
    layer_choices,
    least_important_first,
    pairs_of,
    random_order,
    shapley_permutations,
    step_counts,
    top_heads,
)
from .record import FinishedAblation, PruneRecord, find_ablation
from .set_analysis import SetTables, best_kept, findings, set_tables
from .set_report import write_set_report
from .settings import AblationConfig, PruneConfig
from .study import AblationStudy

ITERATIVE = "iterative"


class PruneStudy(AblationStudy):
    """Results: `sets` (the plan, complete after `run`), `tables` (after `export`)."""

    def __init__(self, encoder: Encoder, ablation: AblationConfig, prune: PruneConfig, model: ModelConfig,
                 evaluation: EvalConfig, seed: int, study_dir: Path, progress: bool = True,
                 timings: Timings | None = None):
        """The heads to prune among, the importance sources and the plan's first part, checked before any data
        is read: a missing single-head ablation, K above the number of heads, shards with sequential parts."""
        if encoder.kind == "cross_encoder":
            raise UserError(f"prune runs on a bi-encoder's embeddings (its curves use the gradient estimate); "
                            f"{encoder.info.name} is a cross-encoder: use `ablate` for its single-head map, or "
                            f"ablation.per_head=false to mask a head set together")
        self.shard_of = ablation.shard_of
        ignored = [key for key, value in (("ablation.top_k", ablation.top_k), ("ablation.per_head=false",
                                                                                 not ablation.per_head)) if value]
        if ignored:
            print(f"note: prune picks its own sets; {' and '.join(ignored)} are not used (the heads pruned among "
                  f"are ablation.heads)", file=sys.stderr)
        single = replace(ablation, per_head=True, top_k=0, shard=None, gradient=prune.wants_gradient)
        super().__init__(encoder, single, model, evaluation, seed, study_dir, progress, timings)
        self.prune = prune
        self.orders = [str(order) for order in prune.orders]
        self.universe = [c.single_head for c in self.conditions]
        self.tables: SetTables | None = None
        self.source: FinishedAblation | None = None
        n = len(self.universe)
        if prune.interactions > n:
            raise UserError(f"prune.interactions={prune.interactions}: the top K are taken among the {n} heads "
                            f"pruned among (ablation.heads={ablation.head_spec}); use K <= {n}")
        if self.shard_of and ITERATIVE in self.orders:
            raise UserError("the iterative order is sequential (each step's gradient needs the step before), so it "
                            "cannot be sharded: run it without ablation.shard, e.g. a run of its own with "
                            "prune.orders=[iterative] prune.layer_heads=false prune.interactions=0")
        if self.shard_of and prune.layer_heads:
            raise UserError("prune.layer_heads ends with the row that keeps every layer's best head, which needs "
                            "all the layer's rows of one run: with ablation.shard set prune.layer_heads=false, and "
                            "run the one-head-per-layer analysis without a shard")
        exact = self._exact_importance() if prune.wants_exact else None
        self.sets = SetPlan(mode=str(ablation.mode), side=str(ablation.side), n_layers=encoder.n_layers,
                            n_heads=encoder.n_heads, universe=[h.name for h in self.universe],
                            rank_by=str(prune.rank_by) if prune.interactions else "")
        self.counts = step_counts(n, None if prune.steps is None else list(prune.steps))
        if prune.steps is not None and len(self.counts) < len({0, *prune.steps}):
            print(f"note: prune.steps give {len({0, *prune.steps})} fractions, but only {len(self.counts)} distinct "
                  f"numbers of heads (of {n}): {self.counts}", file=sys.stderr)
        if "exact" in self.orders:
            self._add_order("exact", None, least_important_first(self.universe, exact))
        for seed in prune.seeds if "random" in self.orders else ():
            self._add_order("random", seed, random_order(self.universe, seed))
        if prune.layer_heads:
            self.sets.layers = layer_choices(self.sets)
        if prune.interactions and prune.rank_by == "exact":
            self._add_top(exact)

    def _exact_importance(self) -> dict[HeadId, float]:
        a = self.ablation
        found = find_ablation(self.cache_dir, self.prune.ablation_run, str(a.mode), str(a.side), self.universe)
        where = self.prune.ablation_run or f"the study {self.cache_dir}"
        if found is None:
            raise UserError(f"the exact order and ranking need single-head ΔMRR ({a.mode} mask, {a.side} side), and "
                            f"{where} has no such ablation: run `codebert-heads ablate` with the same settings "
                            f"(ablation.mode={a.mode} ablation.side={a.side}) first, or leave exact out "
                            f"(prune.orders without exact, prune.rank_by=gradient)")
        self.source = found
        return exact_importance(found.single_heads(str(a.mode), str(a.side)), self.universe, str(found.folder))

    def _add_order(self, name: str, seed: int | None, order: list[HeadId]) -> None:
        key = name if seed is None else f"{name}-{seed}"
        self.sets.orders[key] = [h.name for h in order]
        self.sets.curve += curve_points(self.sets, name, seed, order, self.counts)

    def _add_top(self, importance: dict[HeadId, float]) -> None:
        p = self.prune
        self.sets.top = [h.name for h in top_heads(self.universe, importance, p.interactions)]
        self.sets.pairs = pairs_of(self.sets)
        if p.shapley_permutations:
            self.sets.shapley, self.sets.shapley_exact = shapley_permutations(self.sets.top, p.shapley_permutations,
                                                                              self.seed)
            how = "all" if self.sets.shapley_exact else "sampled"
            print(f"Shapley values of the top {len(self.sets.top)}: {len(self.sets.shapley)} permutations ({how})",
                  file=sys.stderr)

    # ------------------------------------------------------------------ before the baseline

    def prepare(self, data, data_config, corpus_config) -> None:
        super().prepare(data, data_config, corpus_config)
        if self.source is not None and self.source.record.task_fingerprint != self.task.fingerprint():
            print(f"note: the exact order comes from {self.source.folder}, measured on other queries or candidates "
                  f"than this run's", file=sys.stderr)

    def _estimate(self, check: Condition):
        """Sets known now as they are; those that wait for the gradient as if they started at layer 0 (most sets
        hold a head of layer 0); each iterative step's gradient pass on top."""
        known = [self.sets.condition(name) for name in self.sets.condition_names()]
        stand_in = Condition("?", (HeadId(0, 0),), self.sets.mode, self.sets.side)
        later = (len(self.counts) - 1) * ("gradient" in self.orders) + \
            (len(self.counts) - 1) * (ITERATIVE in self.orders) + int(self.prune.layer_heads)
        if self.prune.interactions and self.prune.rank_by == "gradient":
            k = self.prune.interactions
            later += k + k * (k - 1) // 2 + self.prune.shapley_permutations * (k - 1)
        conditions = known + [stand_in] * later
        if self.shard_of:
            conditions = shard(conditions, *self.shard_of)
        estimate = self._estimate_of(check, conditions)
        if ITERATIVE in self.orders:
            tokens = sum(sum(self.inputs[s].batch_tokens()) for s in ("query", "code") if check.affects(s))
            steps = max(0, len(self.counts) - 2)   # the first step's gradient is the study's
            estimate.gradient_s += steps * 3 * estimate.seconds_per_layer_token * self.encoder.n_layers * tokens
        return estimate

    # ------------------------------------------------------------------ the run

    def signature(self) -> dict:
        return {**super().signature(), "grad_temperature": self.ablation.grad_temperature}

    def run(self, folder: Path, resume: bool, finished: Path | None = None) -> None:
        """The gradient (when an order or the ranking needs it), every planned set not yet measured (this run's
        shard of them), then the layer's best-head row and the iterative order."""
        self.store = self._open_store(folder, resume, finished)
        if self.prune.wants_gradient:
            self._study_gradient()
            scores = gradient_importance(self.grad, self.universe)
            if "gradient" in self.orders:
                self._add_order("gradient", None, least_important_first(self.universe, scores))
            if self.prune.interactions and self.prune.rank_by == "gradient":
                self._add_top(scores)
        conditions = [self.sets.condition(name) for name in self.sets.condition_names()]
        if self.shard_of:
            conditions = shard(conditions, *self.shard_of)
            print(f"shard {self.shard_of[0]}/{self.shard_of[1]}: {len(conditions)} sets; `aggregate` over the "
                  f"shards makes the tables", file=sys.stderr)
        with self.timings.phase("ablation_s"):
            print(f"head sets: {len(conditions)} to measure", file=sys.stderr)
            self.measure(conditions)
            if self.prune.layer_heads:
                best = best_choice(self.sets, best_kept(self.sets, self._rr(c.condition for c in self.sets.layers)))
                self.sets.layers.append(best)
                self.measure([self.sets.condition(best.condition)])
        if ITERATIVE in self.orders:
            with self.timings.phase("iterative_s"):
                self._iterative()
        self.sets.tidy()

    def _rr(self, names) -> dict[str, np.ndarray]:
        return {name: np.asarray(self.store.load(name)["rr"]) for name in names}

    def _iterative(self) -> None:
        """Michel et al.'s iterative pruning: at each step the gradient importance is estimated again with the heads
        pruned so far masked, and the least important of the rest are pruned next (as many as the next step
        needs). Each step's scores are stored; the embeddings of a set are recomputed only when a resume needs
        them for a gradient not yet stored."""
        pruned: list[HeadId] = []
        embeddings: Embeddings | None = self.embeddings
        order: list[HeadId] = []
        for target in self.counts[1:]:
            scores = self._iterative_scores(pruned, embeddings)
            remaining = [h for h in self.universe if h not in pruned]
            chosen = least_important_first(remaining, gradient_importance(scores, remaining))[:target - len(pruned)]
            pruned = pruned + chosen
            order += chosen
            condition = self.sets.condition(self.sets.set_name(pruned))
            kept: dict[str, Embeddings] = {}
            self.measure([condition], keep=lambda _c, e: kept.update(e=e), note=False)
            embeddings = kept.get("e")
        self.sets.orders[ITERATIVE] = [h.name for h in order]
        self.sets.curve += curve_points(self.sets, ITERATIVE, None, order, self.counts)

    def _iterative_scores(self, pruned: list[HeadId], embeddings: Embeddings | None) -> np.ndarray:
        """The gradient importance with `pruned` masked: the study's gradient before any is, else stored or
        computed (from the set's embeddings, recomputed when not at hand)."""
        if not pruned:
            return self.grad
        key = f"iterative-gradient:{self.sets.set_name(pruned)}"
        if self.store.done(key):
            return np.asarray(self.store.load(key)["scores"], dtype=np.float64)
        if embeddings is None:
            kept: dict[str, Embeddings] = {}
            condition = self.sets.condition(self.sets.set_name(pruned))
            self._rerun(condition, kept)
            embeddings = kept["e"]
        masks = {side: HeadMask(pruned, self.sets.mode, (self.means or {}).get(side))
                 for side in SIDES_OF[self.sets.side]}
        scores = gradient_scores(self.encoder, self.task.queries, self.task.candidates, np.asarray(self.task.gold),
                                 embeddings, self.model, self.ablation.grad_temperature, self.sets.side,
                                 progress=self.progress, block_rows=self.plan.score_rows, pruned=masks)
        self.store.save(key, {"scores": scores.tolist(), "pruned": [h.name for h in pruned]})
        return scores

    def _rerun(self, condition: Condition, kept: dict) -> None:
        """A measured set's embeddings again (its ranks are in the store already)."""
        from .engine import run_conditions

        def keep(_c, query_emb, code_emb):
            kept["e"] = Embeddings(self.embeddings.queries if query_emb is None else query_emb,
                                   self.embeddings.candidates if code_emb is None else code_emb)
        run_conditions(self.encoder, self.inputs["query"], self.inputs["code"], [condition], keep, self.means,
                       self.plan.layout, progress=False)

    # ------------------------------------------------------------------ results

    def per_query_frame(self, names: list[str]) -> pd.DataFrame:
        query_ids = [self.task.query_ids[i] for i in self.baseline.query_index]
        frames = [pd.DataFrame({"query_id": query_ids, "condition": "baseline", "rr": self.baseline.rr, "mode": "",
                                "side": ""})]
        frames += [pd.DataFrame({"query_id": query_ids, "condition": name, "rr": rr, "mode": self.sets.mode,
                                 "side": self.sets.side}) for name, rr in self._rr(names).items()]
        return pd.concat(frames, ignore_index=True)

    def export(self, folder: Path) -> list[str]:
        """The tables and figures (a shard writes its sets' ranks and the plan only: `aggregate` makes the tables
        from all shards); returns the file names."""
        folder = Path(folder)
        with self.timings.phase("statistics_s"):
            names = [n for n in self.sets.condition_names() if self.store.done(n)]
            per_query = self.per_query_frame(names)
            if self.shard_of:
                self.tables = None
                return write_set_report(folder, None, per_query, [self.sets], self.facts(), self.report_settings)
            self.tables = set_tables([(self.sets, self._rr(names))], self.baseline.rr, self.report_settings)
            return write_set_report(folder, self.tables, per_query, [self.sets], self.facts(), self.report_settings)

    def record(self) -> PruneRecord:
        task, a = self.task, self.ablation
        return PruneRecord(
            model=self.model_facts(),
            data={"source": task.source, "form": task.form, "n_queries": len(task),
                  "n_candidates": len(task.candidates)},
            corpus_hash=self.data.corpus_hash, task_fingerprint=task.fingerprint(), protocol=self.baseline.summary(),
            baseline_mrr=self.baseline.mrr, mode=self.sets.mode, side=self.sets.side,
            n_heads=len(self.universe), orders=list(self.sets.orders), steps=self.counts,
            n_sets=len(self.sets.condition_names()), exact_source=str(self.source.folder) if self.source else None,
            findings=findings(self.tables) if self.tables is not None else {},
            correction=str(a.correction), primary_test=str(a.primary_test), alpha=a.alpha,
            shard=None if not self.shard_of else f"{self.shard_of[0]}/{self.shard_of[1]}",
            precision=self.precision_agreement or {"precision": str(a.precision)},
            memory={**self.plan.summary(), "measured_peak": self.measured_peak()},
            time_estimate=asdict(self.estimate))
