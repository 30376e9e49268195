"""The head-set tables from many finished prune runs of a study: shards of one plan, or orders and analyses spread
over machines by a sweep.

Each run keeps its plan (`plan.json`) and the per-query ranks of the sets it measured. Aggregation checks that the
runs share one baseline, merges their plans (a point two runs both plan must name the same set: the same order, the
same top K), checks that every set of the merged plan was measured by some run (and the same wherever measured
twice), and makes the tables with the runs' own statistics settings: the tables one `prune` run over the same plan
makes.
"""
from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from codesearch.errors import UserError
from codesearch.runfolder import run_folders

from .aggregation import settings_of_runs, shared_baseline
from .head_sets import SetPlan
from .record import PruneRecord, SetAggregateRecord
from .report import StudyFacts
from .set_analysis import SetTables, findings, set_tables
from .set_report import write_set_report
from .settings import ReportSettings


@dataclass
class FinishedPrune:
    folder: Path
    record: PruneRecord

    @functools.cached_property
    def plans(self) -> list[SetPlan]:
        return [SetPlan.from_dict(plan) for plan in json.loads((self.folder / "plan.json").read_text())]

    @functools.cached_property
    def per_query(self) -> pd.DataFrame:
        return pd.read_csv(self.folder / "per_query.csv", dtype={"query_id": str}, keep_default_na=False)


def finished_prune_runs(folder: Path) -> list[FinishedPrune]:
    """The study folder's finished prune runs (`prune/*/` with a record); [] when there are none."""
    runs = sorted(run for run in run_folders(Path(folder) / "prune") if PruneRecord.is_finished(run))
    return [FinishedPrune(run, PruneRecord.read(run)) for run in runs]


def _merge_points(merged: list, more: list, key, what: str, where: Path) -> list:
    """The points of both, one per key; a key both have must name the same set."""
    known = {key(item): item for item in merged}
    for item in more:
        if key(item) in known and known[key(item)].condition != item.condition:
            raise UserError(f"{where}: its {what} {key(item)} masks {item.condition}, another run's "
                            f"{known[key(item)].condition}: the runs do not share one plan; aggregate them separately")
        known.setdefault(key(item), item)
    return list(known.values())


def merge_plans(plans: list[tuple[SetPlan, Path]]) -> SetPlan:
    """One plan of the same mode and side from several runs' plans; what two plans both say must agree."""
    first, first_folder = plans[0]
    merged = SetPlan.from_dict(first.as_dict())
    for plan, folder in plans[1:]:
        if (plan.universe, plan.n_layers, plan.n_heads) != (merged.universe, merged.n_layers, merged.n_heads):
            raise UserError(f"{folder} prunes among other heads than {first_folder}: aggregate them separately")
        for name, order in plan.orders.items():
            if merged.orders.setdefault(name, order) != order:
                raise UserError(f"{folder}: its {name} order differs from {first_folder}'s (another importance "
                                f"source?): aggregate them separately")
        for field_name in ("top", "shapley"):
            theirs, ours = getattr(plan, field_name), getattr(merged, field_name)
            if theirs and ours and theirs != ours:
                raise UserError(f"{folder}: its {'top K' if field_name == 'top' else 'Shapley permutations'} "
                                f"differ from {first_folder}'s: aggregate them separately")
        if plan.top and not merged.top:
            merged.top, merged.rank_by = plan.top, plan.rank_by
        if plan.shapley and not merged.shapley:
            merged.shapley, merged.shapley_exact = plan.shapley, plan.shapley_exact
        merged.curve = _merge_points(merged.curve, plan.curve, lambda p: (p.order, p.seed, p.n_pruned),
                                     "curve point", folder)
        merged.layers = _merge_points(merged.layers, plan.layers, lambda c: (c.layer, c.kept), "layer row", folder)
        merged.pairs = _merge_points(merged.pairs, plan.pairs, lambda p: (p.a, p.b), "pair", folder)
    merged.tidy()
    return merged


@dataclass
class SetAggregation:
    runs: list[FinishedPrune]
    settings: ReportSettings
    setting_sources: dict
    plans: list[SetPlan]
    tables: SetTables
    per_query: pd.DataFrame
    facts: StudyFacts

    def write(self, folder: Path) -> list[str]:
        return write_set_report(Path(folder), self.tables, self.per_query, self.plans, self.facts, self.settings)

    def record(self) -> SetAggregateRecord:
        first = self.runs[0].record
        return SetAggregateRecord(
            model=first.model, corpus_hash=first.corpus_hash, task_fingerprint=first.task_fingerprint,
            protocol=first.protocol, baseline_mrr=self.facts.baseline_mrr, correction=self.settings.correction,
            primary_test=self.settings.primary_test, alpha=self.settings.alpha, findings=findings(self.tables),
            sources=[str(r.folder) for r in self.runs], n_runs=len(self.runs),
            report_settings=asdict(self.settings), report_settings_from=self.setting_sources)


def aggregate_sets(runs: list[FinishedPrune], config: dict, explicit: set[str]) -> SetAggregation:
    settings, sources = settings_of_runs(runs, config, explicit)
    first = runs[0]
    baseline = shared_baseline(runs)
    by_masking: dict[tuple[str, str], dict] = {}
    for run in runs:
        per_query = run.per_query
        for plan in run.plans:
            group = by_masking.setdefault((plan.mode, plan.side), {"plans": [], "rr": {}, "where": {}})
            group["plans"].append((plan, run.folder))
            rows = per_query[(per_query["mode"] == plan.mode) & (per_query["side"] == plan.side)
                             & (per_query["condition"] != "baseline")]
            for name, of_set in rows.groupby("condition", sort=False):
                rr = of_set["rr"].to_numpy(dtype=np.float64)
                if name in group["rr"] and not np.array_equal(group["rr"][name], rr):
                    raise UserError(f"{run.folder}: set {name} has other ranks than in {group['where'][name]}; "
                                    f"remove one of the two runs")
                group["rr"][name], group["where"][name] = rr, run.folder
    groups, plans = [], []
    for (mode, side), group in sorted(by_masking.items()):
        plan = merge_plans(group["plans"])
        missing = [name for name in plan.condition_names() if name not in group["rr"]]
        if missing:
            raise UserError(f"{len(missing)} sets of the merged plan ({mode} mask, {side}) were measured by none of "
                            f"the runs (e.g. {missing[0]}): is a shard missing or unfinished?")
        groups.append((plan, group["rr"]))
        plans.append(plan)
    baseline_rr = baseline["rr"].to_numpy(dtype=np.float64)
    tables = set_tables(groups, baseline_rr, settings)
    query_ids = baseline["query_id"].tolist()
    per_query = pd.concat([baseline.assign(mode="", side="")[["query_id", "condition", "rr", "mode", "side"]]]
                          + [pd.DataFrame({"query_id": query_ids, "condition": name, "rr": rr_of[name],
                                           "mode": plan.mode, "side": plan.side})
                             for plan, rr_of in groups for name in plan.condition_names()], ignore_index=True)
    record = first.record
    facts = StudyFacts(model=record.model.name, baseline_mrr=float(baseline_rr.mean()), n_queries=len(baseline_rr),
                       protocol=record.protocol.protocol, candidates_per_query=record.protocol.candidates_per_query,
                       modes=tuple(sorted({p.mode for p in plans})), sides=tuple(sorted({p.side for p in plans})))
    return SetAggregation(runs, settings, sources, plans, tables, per_query, facts)
