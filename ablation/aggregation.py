"""One importance table from many finished ablation runs of a study (a sweep runs one head per run).

Each run's folder keeps its per-query reciprocal ranks and its record. Aggregation checks that every run shares one
baseline (same queries, same protocol, same ranks), recomputes each condition's statistics with the runs' own
settings, and applies the multiple-comparison correction over all of them: the table `ablate` makes over the same
heads.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from codesearch.errors import UserError
from codesearch.runfolder import run_folders

from .conditions import condition_named
from .record import AblationRecord, AggregateRecord, FinishedAblation
from .report import ConditionResult, StudyFacts, gradient_agreement, importance_report, write_report
from .settings import REPORT_FIELDS, ReportSettings
from .stats import unreachable_significance

# The settings behind a table's statistics, as dotted config keys and ReportSettings fields.
REPORT_KEYS = {"seed": "seed", **{f"ablation.{name}": name for name in REPORT_FIELDS}}


def finished_runs(folder: Path) -> list[FinishedAblation]:
    """The study folder's finished ablation runs (`ablate/*/` with a record)."""
    runs = sorted(run for run in run_folders(Path(folder) / "ablate") if AblationRecord.is_finished(run))
    if not runs:
        raise UserError(f"{folder}: no finished ablation runs (folders ablate/*/ with a {AblationRecord.FILE})")
    return [FinishedAblation.read(run, AblationRecord) for run in runs]


def _setting(config: dict, key: str):
    for part in key.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


def settings_of_runs(runs: list[FinishedAblation], config: dict, explicit: set[str]) -> tuple[ReportSettings, dict]:
    """The statistics settings the runs were made with (they must agree), except those the user set on purpose
    for the aggregation (`explicit` dotted keys, their values in `config`, the aggregation's own plain config); and,
    for the record, where each came from. Recomputed with the runs' own settings, the table is the one `ablate`
    makes over the same heads."""
    chosen, sources, first_run = {}, {}, {}
    for run in runs:
        for key in REPORT_KEYS:
            value = _setting(run.record.config, key)
            if key not in chosen:
                chosen[key], first_run[key] = value, run.folder
            elif value != chosen[key]:
                raise UserError(f"{run.folder} has {key}={value} but {first_run[key]} has {key}={chosen[key]}: the "
                                f"runs were not made with one setting; aggregate them separately")
    for key in REPORT_KEYS:
        if key in explicit or chosen[key] is None:
            sources[key] = "aggregate command"
            given = _setting(config, key)
            if chosen[key] is not None and given != chosen[key]:
                print(f"note: {key}={given} given here; the runs were made with {chosen[key]}")
            chosen[key] = given
        else:
            sources[key] = "runs"
    return ReportSettings(**{name: chosen[key] for key, name in REPORT_KEYS.items()}), sources


@dataclass
class Aggregation:
    """The aggregated table and what was aggregated."""
    runs: list[FinishedAblation]
    settings: ReportSettings
    setting_sources: dict
    frame: pd.DataFrame
    per_query: pd.DataFrame
    facts: StudyFacts

    def write(self, folder: Path) -> list[str]:
        first = self.runs[0].record
        return write_report(Path(folder), self.frame, self.per_query, self.facts, self.settings, first.model.layers,
                            first.model.heads)

    def record(self) -> AggregateRecord:
        """The aggregate run's record (the run fills in config, files, timings)."""
        first = self.runs[0].record
        return AggregateRecord(
            sources=[str(r.folder) for r in self.runs], n_runs=len(self.runs),
            n_conditions=len(self.frame), n_significant=int(self.frame["significant"].sum()),
            baseline_mrr=self.facts.baseline_mrr, protocol=first.protocol, model=first.model,
            corpus_hash=first.corpus_hash, task_fingerprint=first.task_fingerprint,
            report_settings=asdict(self.settings), report_settings_from=self.setting_sources,
            correction=self.settings.correction, primary_test=self.settings.primary_test, alpha=self.settings.alpha,
            gradient_vs_exact=gradient_agreement(self.frame))


def shared_baseline(runs) -> pd.DataFrame:
    """The baseline rows (query_id, rr) of per_query.csv that every run shares: the same queries, protocol and
    ranks, else the runs are not one study."""
    first, baseline = runs[0], None
    for run in runs:
        if (run.record.task_fingerprint, run.record.protocol.protocol) != \
                (first.record.task_fingerprint, first.record.protocol.protocol):
            raise UserError(f"{run.folder} evaluates other queries or another protocol than {first.folder}: "
                            f"not one study")
        base = run.per_query[run.per_query["condition"] == "baseline"]
        if baseline is None:
            baseline = base
        elif not (base["query_id"].tolist() == baseline["query_id"].tolist()
                  and np.array_equal(base["rr"].to_numpy(), baseline["rr"].to_numpy())):
            raise UserError(f"{run.folder}: its baseline ranks differ from {first.folder}'s: not one study")
    return baseline


def aggregate(runs: list[FinishedAblation], config: dict, explicit: set[str]) -> Aggregation:
    """Every condition of every run against the one baseline they share, corrected over all of them; settings
    given on purpose (`explicit` keys of `config`) win over the runs'."""
    settings, sources = settings_of_runs(runs, config, explicit)
    first = runs[0]
    model = first.record.model
    baseline = shared_baseline(runs)
    results: dict[tuple[str, str, str], tuple[ConditionResult, Path]] = {}
    for run in runs:
        per_query = run.per_query
        for _, row in run.table.iterrows():
            rows = per_query[per_query["condition"] == row["condition"]]
            if "mode" in rows:
                rows = rows[(rows["mode"] == row["mode"]) & (rows["side"] == row["side"])]
            key = (row["condition"], row["mode"], row["side"])
            result = ConditionResult(condition_named(*key, model.layers, model.heads), rows["rr"].to_numpy(),
                                     None if pd.isna(row["grad_score"]) else float(row["grad_score"]))
            if key in results:  # the same condition run twice (a retried sweep run) must agree with itself
                earlier, earlier_run = results[key]
                what = ("ranks" if not np.array_equal(earlier.rr, result.rr) else
                        "grad_score" if earlier.grad_score != result.grad_score else None)
                if what:
                    raise UserError(f"{run.folder}: condition {key[0]} ({key[1]}, {key[2]}) has another {what} than "
                                    f"in {earlier_run}; remove one of the two runs")
            results[key] = (result, run.folder)
    warning = unreachable_significance(len(results), settings)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    frame, per_query_out = importance_report(baseline["rr"].to_numpy(), [result for result, _ in results.values()],
                                             baseline["query_id"].tolist(), settings)
    facts = StudyFacts(model=model.name, baseline_mrr=float(baseline["rr"].mean()), n_queries=len(baseline),
                       protocol=first.record.protocol.protocol,
                       candidates_per_query=first.record.protocol.candidates_per_query,
                       modes=tuple(sorted(set(frame["mode"]))), sides=tuple(sorted(set(frame["side"]))))
    return Aggregation(runs, settings, sources, frame, per_query_out, facts)
