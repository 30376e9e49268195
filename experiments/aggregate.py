"""`codebert-heads aggregate <study>`: one importance table from all of a study's ablation runs.

A sweep runs one head per run; each run's folder keeps its per-query reciprocal ranks. Aggregation collects
them (from the run folders, or from the runs' `results` artifacts through the W&B API when online), checks
that every run shares one baseline (same queries, same ranks), and rebuilds the table with the
multiple-comparison correction applied over all runs, exported as `ablate` exports it.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import asdict
from enum import Enum
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ablation.conditions import Condition
from ablation.report import (
    ConditionResult,
    ReportSettings,
    StudyFacts,
    gradient_agreement,
    importance_report,
    write_report,
)
from ablation.stats import unreachable_significance
from codesearch.errors import UserError
from heads.naming import parse_head_spec

from .ablate import REPORT_FILES
from .runs import begin_run, package_versions, write_config, write_json
from .tracking import RunLog, log_run, resolve_mode

MARKER = "run.json"


def _condition(name: str, mode: str, side: str, n_layers: int, n_heads: int) -> Condition:
    spec = name.replace("+", ",")
    return Condition(name, tuple(parse_head_spec(spec, n_layers, n_heads)), mode, side)


WANDB_PREFIX = "wandb:"


def study_folder(cfg: DictConfig, study: str) -> Path:
    """A study's folder: the path given, a study name under runs_dir, or (online) its runs fetched from W&B:
    `wandb:<group>` always, a bare group name when no local folder has that name."""
    online = resolve_mode(str(cfg.wandb.mode)) == "online"
    if study.startswith(WANDB_PREFIX):
        if not online:
            raise UserError(f"{study}: reading a study from W&B needs wandb.mode=online and credentials")
        return download_study(cfg, study.removeprefix(WANDB_PREFIX))
    for candidate in (Path(study).expanduser(), Path(cfg.runs_dir).expanduser() / study):
        if candidate.is_dir():
            print(f"aggregating the runs in {candidate} (runs kept on other machines are not there: use a shared "
                  f"runs_dir, or `aggregate {WANDB_PREFIX}<group>` online)", file=sys.stderr)
            return candidate
    if online:
        return download_study(cfg, study)
    raise UserError(f"no study folder {study!r} (looked in . and {cfg.runs_dir}/); with W&B online, a study is "
                    f"also found by its group name (`{WANDB_PREFIX}<group>`)")


def download_study(cfg: DictConfig, group: str, api=None) -> Path:
    """The `results` artifacts of a W&B group's ablation runs, downloaded as run folders."""
    if api is None:
        import wandb

        api = wandb.Api(timeout=60)
    path = f"{cfg.wandb.entity}/{cfg.wandb.project}" if cfg.wandb.entity else cfg.wandb.project
    root = Path(tempfile.mkdtemp(prefix=f"{group}-")) / group
    count = 0
    for run in api.runs(path, filters={"group": group, "jobType": "ablation"}):
        for artifact in run.logged_artifacts():
            if artifact.type == "results":  # by run id: a head rerun under the same name keeps its own folder
                artifact.download(root=str(root / "ablate" / f"{run.name}-{run.id}"))
                count += 1
    if not count:
        raise UserError(f"W&B project {path} has no finished ablation runs in group {group!r}")
    return root


def collect_runs(folder: Path) -> list[Path]:
    runs = sorted(p.parent for p in folder.glob("ablate/*/" + MARKER))
    if not runs:
        raise UserError(f"{folder}: no finished ablation runs (folders ablate/*/ with a {MARKER})")
    return runs


# The settings behind a table's statistics, as dotted config keys and ReportSettings fields.
REPORT_KEYS = {"seed": "seed", "ablation.alpha": "alpha", "ablation.correction": "correction",
               "ablation.primary_test": "primary_test", "ablation.n_bootstrap": "n_bootstrap",
               "ablation.n_permutations": "n_permutations"}


def settings_of_runs(cfg: DictConfig, runs: list[Path], explicit: set[str]) -> tuple[ReportSettings, dict]:
    """The statistics settings the runs were made with (they must agree), except those the user set on purpose
    for the aggregation; and, for run.json, where each came from. Recomputed with the runs' own settings, the
    table is the one `ablate` makes over the same heads."""
    chosen, sources, first_run = {}, {}, {}
    for run in runs:
        config_file = run / "config.yaml"
        if not config_file.is_file():
            raise UserError(f"{run}: no config.yaml, so the settings of its statistics are unknown")
        run_cfg = OmegaConf.load(config_file)
        for key in REPORT_KEYS:
            value = OmegaConf.select(run_cfg, key)
            if key not in chosen:
                chosen[key], first_run[key] = value, run
            elif value != chosen[key]:
                raise UserError(f"{run} has {key}={value} but {first_run[key]} has {key}={chosen[key]}: the runs "
                                f"were not made with one setting; aggregate them separately")
    for key in REPORT_KEYS:
        given = OmegaConf.select(cfg, key)
        given = str(given) if isinstance(given, Enum) else given
        if key in explicit or chosen[key] is None:
            sources[key] = "aggregate command"
            if chosen[key] is not None and given != chosen[key]:
                print(f"note: {key}={given} given here; the runs were made with {chosen[key]}")
            chosen[key] = given
        else:
            sources[key] = "runs"
    return ReportSettings(**{field: chosen[key] for key, field in REPORT_KEYS.items()}), sources


def run_aggregate(cfg: DictConfig, study: str, explicit: set[str] | None = None) -> Path:
    started = time.perf_counter()
    folder = study_folder(cfg, study)
    runs = collect_runs(folder)
    settings, setting_sources = settings_of_runs(cfg, runs, explicit or set())
    first = json.loads((runs[0] / MARKER).read_text())
    model = first["model"]
    baseline = None
    results: dict[tuple[str, str, str], tuple[ConditionResult, Path]] = {}
    for run in runs:
        record = json.loads((run / MARKER).read_text())
        if record["task_fingerprint"] != first["task_fingerprint"] or record["protocol"]["protocol"] != \
                first["protocol"]["protocol"]:
            raise UserError(f"{run} evaluates other queries or another protocol than {runs[0]}: not one study")
        per_query = pd.read_csv(run / "per_query.csv", dtype={"query_id": str}, keep_default_na=False)
        table = pd.read_csv(run / "importance.csv")
        base = per_query[per_query["condition"] == "baseline"]
        if baseline is None:
            baseline = base
        elif not (base["query_id"].tolist() == baseline["query_id"].tolist()
                  and np.array_equal(base["rr"].to_numpy(), baseline["rr"].to_numpy())):
            raise UserError(f"{run}: its baseline ranks differ from {runs[0]}'s: not one study")
        for _, row in table.iterrows():
            rows = per_query[per_query["condition"] == row["condition"]]
            if "mode" in rows:
                rows = rows[(rows["mode"] == row["mode"]) & (rows["side"] == row["side"])]
            key = (row["condition"], row["mode"], row["side"])
            result = ConditionResult(
                _condition(row["condition"], row["mode"], row["side"], model["layers"], model["heads"]),
                rows["rr"].to_numpy(), None if pd.isna(row["grad_score"]) else float(row["grad_score"]))
            if key in results:  # the same condition run twice (a retried sweep run) must agree with itself
                earlier, earlier_run = results[key]
                what = ("ranks" if not np.array_equal(earlier.rr, result.rr) else
                        "grad_score" if earlier.grad_score != result.grad_score else None)
                if what:
                    raise UserError(f"{run}: condition {key[0]} ({key[1]}, {key[2]}) has another {what} than in "
                                    f"{earlier_run}; remove one of the two runs")
            results[key] = (result, run)
    warning = unreachable_significance(len(results), settings)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    frame, per_query_out = importance_report(baseline["rr"].to_numpy(), [result for result, _ in results.values()],
                                             baseline["query_id"].tolist(), settings)
    facts = StudyFacts(model=model["name"], baseline_mrr=float(baseline["rr"].mean()), n_queries=len(baseline),
                       protocol=first["protocol"]["protocol"],
                       candidates_per_query=first["protocol"]["candidates_per_query"],
                       modes=tuple(sorted(set(frame["mode"]))), sides=tuple(sorted(set(frame["side"]))))
    downloaded = study.startswith(WANDB_PREFIX) or not any(
        Path(p).is_dir() for p in (Path(study).expanduser(), Path(cfg.runs_dir).expanduser() / study))
    home = Path(cfg.runs_dir).expanduser() / folder.name if downloaded else folder  # never a temporary folder
    out = Path(cfg.output_dir).expanduser() if cfg.output_dir else home / "aggregate"
    begin_run(out, MARKER, REPORT_FILES)
    write_config(out / "config.yaml", cfg)
    files = write_report(out, frame, per_query_out, facts, settings, model["layers"], model["heads"])
    run = {
        "command": "aggregate", "study": folder.name, "sources": [str(r) for r in runs], "n_runs": len(runs),
        "n_conditions": len(frame), "n_significant": int(frame["significant"].sum()),
        "baseline_mrr": facts.baseline_mrr, "protocol": first["protocol"], "model": model,
        "corpus_hash": first["corpus_hash"], "task_fingerprint": first["task_fingerprint"],
        "report_settings": asdict(settings), "report_settings_from": setting_sources,
        "correction": settings.correction, "primary_test": settings.primary_test, "alpha": settings.alpha,
        "gradient_vs_exact": gradient_agreement(frame), "files": files + ["config.yaml"],
        "versions": package_versions(), "timings": {"total_s": round(time.perf_counter() - started, 3)},
    }
    write_json(out / MARKER, run)
    print(f"{len(runs)} runs, {len(frame)} conditions, {run['n_significant']} significant "
          f"({settings.correction}, alpha {settings.alpha}); results: {out}")
    log_run(cfg, folder.name, home, aggregate_log(out, frame, run))
    return out


def aggregate_log(out: Path, frame: pd.DataFrame, run: dict) -> RunLog:
    from .ablate import agreement_summary, condition_history

    images = {"heatmap": out / "heatmap.png"} if (out / "heatmap.png").is_file() else {}
    return RunLog(job_type="aggregate", name="aggregate", results_dir=out, history=condition_history(frame),
                  tables={"importance": frame}, images=images,
                  summary={"eval/baseline_mrr": run["baseline_mrr"], "stats/n_significant": run["n_significant"],
                           "stats/n_conditions": run["n_conditions"], "sweep/n_runs": run["n_runs"],
                           **agreement_summary(run["gradient_vs_exact"])},
                  artifact_metadata={"corpus_hash": run["corpus_hash"], "model": run["model"],
                                     "task_fingerprint": run["task_fingerprint"]})
