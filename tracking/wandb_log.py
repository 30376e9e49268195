"""Weights & Biases logging for every command.

Each command writes its run folder first and logs it to W&B after: a W&B failure can never lose a local result.
With no credentials the default is offline (never a login prompt, never a hang); offline runs land in the
study's folder (`<study>/wandb/offline-run-*`) and `wandb sync` uploads them later.

A run on the dashboard: `group` = the study (model + corpus + settings, shared by the baseline and its
ablations), `job_type` = its role (`baseline`, `ablation`, `aggregate`, `probe`), a deterministic name
(`abl-L03-H07`), namespaced metrics (`eval/...`, `stats/...`, `grad/...`), the final values in the summary, tables
and images, and the run folder as a `results` artifact.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from codesearch.errors import UserError

from .settings import WandbConfig


@dataclass
class LinePlot:
    """Lines of y against x, one per key, drawn by W&B as one chart (`wandb.plot.line_series`)."""
    xs: list[float]
    ys: list[list[float]]
    keys: list[str]
    title: str
    xname: str


@dataclass
class RunLog:
    """Everything one command sends to W&B, gathered after its local results are written."""
    job_type: str
    name: str
    results_dir: Path
    summary: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)       # one dict per step
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    images: dict[str, Path] = field(default_factory=dict)
    plots: dict[str, LinePlot] = field(default_factory=dict)
    artifact_metadata: dict = field(default_factory=dict)
    config_extra: dict = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    dataset: tuple[str, str, dict] | None = None             # (name, local path, metadata), for lineage online
    model: tuple[str, str, dict] | None = None
    run: Any = None            # a W&B run already open (`start_run`, for Lightning's logger) to log into and finish


def provenance(data, encoder, study: str) -> dict:
    """Where a run's numbers come from, as RunLog fields: the corpus and the model, with their hashes."""
    metadata = {"corpus_manifest": data.manifest, "corpus_hash": data.corpus_hash,
                "task_fingerprint": data.task.fingerprint(), "model": encoder.info.name,
                "model_revision": encoder.info.revision}
    return {
        "config_extra": {"study": study, "corpus_hash": data.corpus_hash, "model_revision": encoder.info.revision},
        "artifact_metadata": metadata,
        "dataset": (f"corpus-{data.corpus_hash.split(':')[-1][:12]}", data.path, data.manifest or {}),
        "model": (f"model-{encoder.info.name}", encoder.info.path or encoder.info.name,
                  {"revision": encoder.info.revision, "recipe": encoder.info.recipe}),
    }


def has_credentials() -> bool:
    """W&B credentials, found as wandb itself finds them, with no prompt and no network: an API key or identity
    token file in the environment, a netrc entry for the configured host (`wandb login` writes it; the host is
    $WANDB_BASE_URL or wandb's settings, else wandb's default server), or a key in wandb's settings."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib.wbauth import wbnetrc

        settings = wandb_setup.singleton().settings
        return bool(settings.api_key or wbnetrc.read_netrc_auth(host=settings.base_url))
    except Exception:  # noqa: BLE001  a malformed netrc or settings file: no usable credentials
        return False


# What $WANDB_MODE may say, as wandb reads it.
ENVIRONMENT_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline",
                     "disabled": "disabled"}


def environment_mode() -> str | None:
    """The mode $WANDB_MODE sets (None when unset); a value wandb does not know is an error, not `auto`."""
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env and env not in ENVIRONMENT_MODES:
        raise UserError(f"WANDB_MODE={env!r} is no W&B mode: set it to online, offline or disabled, or unset it")
    return ENVIRONMENT_MODES.get(env) if env else None


def resolve_mode(requested: str) -> str:
    """online | offline | disabled. `auto`: $WANDB_MODE if set, else online with credentials, else offline."""
    if requested != "auto":
        return requested
    return environment_mode() or ("online" if has_credentials() else "offline")


def artifact_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:120]


def log_run(settings: WandbConfig, config: dict, study: str, study_folder: Path, log: RunLog) -> str | None:
    """Send a finished run to W&B. Returns the run's folder or URL, or None when disabled or when W&B failed
    (the failure is reported; the local results are already complete)."""
    mode = resolve_mode(str(settings.mode))
    if mode == "disabled":
        return None
    try:
        return _log(settings, config, study, study_folder, log, mode)
    except Exception as exc:  # noqa: BLE001  W&B's own errors come in many types; none may cost a result
        if mode == "online":
            print(f"W&B online logging failed ({_first_line(exc)}); logging offline instead", file=sys.stderr)
            try:
                return _log(settings, config, study, study_folder, log, "offline")
            except Exception as second:  # noqa: BLE001
                exc = second
        print(f"W&B logging failed ({_first_line(exc)}); the results in {log.results_dir} are complete",
              file=sys.stderr)
        return None


def _first_line(exc: Exception) -> str:
    """The error in one line: W&B's own messages go on with advice over several."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _wandb():
    os.environ.setdefault("WANDB_SILENT", "true")  # W&B's own console notes; our messages say what matters
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import wandb
    return wandb


def _init(w: WandbConfig, config: dict, study: str, study_folder: Path, job_type: str, name: str, tags: list[str],
          mode: str):
    wandb = _wandb()
    study_folder.mkdir(parents=True, exist_ok=True)
    settings = wandb.Settings(silent=True, console="off", init_timeout=float(w.init_timeout),
                              x_disable_stats=True)
    return wandb.init(
        project=w.project, entity=w.entity or None, group=study, job_type=job_type, name=name,
        tags=[*w.tags, *tags], config=config, dir=str(study_folder), mode=mode, settings=settings,
        reinit="create_new",
    )


def start_run(settings: WandbConfig, config: dict, study: str, study_folder: Path, job_type: str, name: str,
              tags: list[str]):
    """A W&B run opened before the work, for a logger that logs while a command runs (Lightning's), in the mode
    `log_run` would use; None when disabled or when W&B cannot start one (said; the work goes on)."""
    mode = resolve_mode(str(settings.mode))
    if mode == "disabled":
        return None
    for attempt in (mode, "offline") if mode == "online" else (mode,):
        try:
            return _init(settings, config, study, study_folder, job_type, name, tags, attempt)
        except Exception as exc:  # noqa: BLE001  W&B's own errors come in many types
            print(f"W&B could not start a {attempt} run ({_first_line(exc)})", file=sys.stderr)
    return None


def _log(w: WandbConfig, config: dict, study: str, study_folder: Path, log: RunLog, mode: str) -> str:
    wandb = _wandb()
    if log.run is not None:   # the run Lightning logged into: finished here, with the results
        run, log.run = log.run, None   # (a retry after a failure starts a run of its own)
        mode = "offline" if run.offline else mode
        run.config.update(log.config_extra, allow_val_change=True)
    else:
        run = _init(w, {**config, **log.config_extra}, study, study_folder, log.job_type, log.name, log.tags, mode)
    try:
        if mode == "online":
            _lineage(run, wandb, log)
        for step in log.history:
            run.log(step)
        for name, frame in log.tables.items():
            run.log({name: wandb.Table(dataframe=frame.astype(object).where(frame.notna(), None))})
        for name, path in log.images.items():
            run.log({name: wandb.Image(str(path))})
        for name, plot in log.plots.items():
            run.log({name: wandb.plot.line_series(xs=plot.xs, ys=plot.ys, keys=plot.keys, title=plot.title,
                                                  xname=plot.xname)})
        for key, value in log.summary.items():
            run.summary[key] = value
        artifact = wandb.Artifact(artifact_name(f"results-{study}-{log.name}"), type="results",
                                  metadata=log.artifact_metadata)
        artifact.add_dir(str(log.results_dir))
        run.log_artifact(artifact)
        location = run.url if mode == "online" else str(Path(run.dir).parent)
    finally:
        run.finish()
    return location


def _lineage(run, wandb, log: RunLog) -> None:
    """Dataset and model as artifacts the run uses, so the dashboard shows where results came from."""
    for kind, item in (("dataset", log.dataset), ("model", log.model)):
        if item is None:
            continue
        name, path, metadata = item
        artifact = wandb.Artifact(artifact_name(name), type=kind, metadata=metadata)
        uri = Path(path).resolve().as_uri() if Path(path).exists() else f"https://huggingface.co/{path}"
        artifact.add_reference(uri, checksum=False)
        run.use_artifact(artifact)


# The runs `aggregate` reads, by W&B job type: the study folder's subfolder each goes into.
AGGREGATED_JOB_TYPES = {"ablation": "ablate", "prune": "prune"}


def download_study(settings: WandbConfig, group: str, api=None) -> Path:
    """The `results` artifacts of a W&B group's ablation and prune runs, downloaded as run folders (`ablate/<run>/`,
    `prune/<run>/`) of a temporary study folder named after the group."""
    if api is None:
        import wandb

        api = wandb.Api(timeout=60)
    path = f"{settings.entity}/{settings.project}" if settings.entity else settings.project
    root = Path(tempfile.mkdtemp(prefix=f"{group}-")) / group
    count = 0
    for job_type, subfolder in AGGREGATED_JOB_TYPES.items():
        for run in api.runs(path, filters={"group": group, "jobType": job_type}):
            for artifact in run.logged_artifacts():
                if artifact.type == "results":  # by run id: a head rerun under the same name keeps its own folder
                    artifact.download(root=str(root / subfolder / f"{run.name}-{run.id}"))
                    count += 1
    if not count:
        raise UserError(f"W&B project {path} has no finished ablation or prune runs in group {group!r}")
    return root
