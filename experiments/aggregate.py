"""`codebert-heads aggregate <study>`: one importance table from all of a study's ablation runs
(`ablation.aggregation`, into `aggregate/`), and the head-set tables from all its prune runs
(`ablation.set_aggregation`, into `aggregate-prune/`), found in the study's folder or, online, in its W&B group."""
from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ablation.aggregation import aggregate, finished_runs
from ablation.record import AblationRecord, AggregateRecord, SetAggregateRecord
from ablation.set_aggregation import aggregate_sets, finished_prune_runs
from codesearch.errors import UserError
from codesearch.runfolder import run_folders
from tracking.run_logs import aggregate_log, set_aggregate_log
from tracking.wandb_log import download_study, resolve_mode

from .config import to_plain
from .runs import Run

WANDB_PREFIX = "wandb:"


def study_folder(cfg: DictConfig, study: str) -> tuple[Path, Path]:
    """(where the study's runs are, where its aggregate goes): the path given, a study name under runs_dir, or
    (online) its runs fetched from W&B: `wandb:<group>` always, a bare group name when no local folder has that
    name. Downloaded runs aggregate into `<runs_dir>/<group>/`, never into a temporary folder."""
    online = resolve_mode(str(cfg.wandb.mode)) == "online"
    if not study.startswith(WANDB_PREFIX):
        for candidate in (Path(study).expanduser(), Path(cfg.runs_dir).expanduser() / study):
            if candidate.is_dir():
                print(f"aggregating the runs in {candidate} (runs kept on other machines are not there: use a "
                      f"shared runs_dir, or `aggregate {WANDB_PREFIX}<group>` online)", file=sys.stderr)
                return candidate, candidate
        if not online:
            raise UserError(f"no study folder {study!r} (looked in . and {cfg.runs_dir}/); with W&B online, a study "
                            f"is also found by its group name (`{WANDB_PREFIX}<group>`)")
    elif not online:
        raise UserError(f"{study}: reading a study from W&B needs wandb.mode=online and credentials")
    folder = download_study(OmegaConf.to_object(cfg.wandb), study.removeprefix(WANDB_PREFIX))
    return folder, Path(cfg.runs_dir).expanduser() / folder.name


def run_aggregate(cfg: DictConfig, study: str, explicit: set[str] | None = None) -> Path:
    """Each kind of run the study holds, each on its own (a refused kind stops not the other); returns the folder
    of the importance table (with prune runs only, of the head-set tables)."""
    folder, home = study_folder(cfg, study)
    explicit = explicit or set()
    pruned = finished_prune_runs(folder)
    if not pruned:
        return aggregate_ablation_runs(cfg, folder, home, explicit)   # says when there are no runs at all
    kinds = [("prune", lambda: aggregate_prune_runs(cfg, folder, home, pruned, explicit))]
    if any(AblationRecord.is_finished(run) for run in run_folders(folder / "ablate")):
        kinds.insert(0, ("ablation", lambda: aggregate_ablation_runs(cfg, folder, home, explicit)))
    done, refused = [], []
    for kind, aggregate_kind in kinds:
        try:
            done.append(aggregate_kind())
        except UserError as exc:
            refused.append(f"{kind} runs: {exc}")
    if refused:
        raise UserError("; ".join(refused) + (f" (written: {', '.join(map(str, done))})" if done else ""))
    return done[0]


def aggregate_ablation_runs(cfg: DictConfig, folder: Path, home: Path, explicit: set[str]) -> Path:
    with Run(cfg, "aggregate", AggregateRecord, study=folder.name, home=home) as run:   # the folder checked first
        result = aggregate(finished_runs(folder), to_plain(cfg), explicit)
        run.begin()
        files = result.write(run.work)
        record = run.finish(result.record(), files)
        print(f"{record.n_runs} runs, {record.n_conditions} conditions, {record.n_significant} significant "
              f"({record.correction}, alpha {record.alpha}); results: {run.folder}")
        run.log(aggregate_log(run.folder, result.frame, record))
    return run.folder


def aggregate_prune_runs(cfg: DictConfig, folder: Path, home: Path, runs, explicit: set[str]) -> Path:
    """The head-set tables of the study's prune runs, into `aggregate-prune/` (with output_dir set: beside it,
    `<output_dir>-prune`)."""
    output = f"{cfg.output_dir.rstrip('/')}-prune" if cfg.output_dir else ""
    with Run(cfg, "aggregate", SetAggregateRecord, study=folder.name, home=home, name="aggregate-prune",
             output_dir=output) as run:
        result = aggregate_sets(runs, to_plain(cfg), explicit)
        run.begin()
        files = result.write(run.work)
        record = run.finish(result.record(), files)
        print(f"{record.n_runs} prune runs, {len(result.plans)} ways of masking; head-set tables: {run.folder}")
        run.log(set_aggregate_log(run.folder, result.tables, record))
    return run.folder
