"""`codebert-heads sweep <file>`: run a W&B sweep file with no W&B server.

The next configuration comes from W&B's own open-source sweep engine (`sweeps.next_run`), the command line is
the one `wandb agent` would launch (the file's `command`, `${env} ${interpreter} ${program} ${args}` by default),
and every run logs offline. The sweep's state is a file in `<runs_dir>/sweeps/`: a configuration is recorded
once its run has finished, so an interrupted sweep resumes where it stopped and never reruns a finished one.
"""
from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import yaml
from omegaconf import DictConfig

from codesearch.errors import UserError
from codesearch.files import atomic_write_text

from .config import ConfigError, load_config, schema_type

DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
MACROS = {"${env}", "${interpreter}", "${program}", "${args}", "${args_no_hyphens}", "${args_no_boolean_flags}",
          "${args_json}"}


def _engine():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydantic's notes on renamed options inside the engine
        import sweeps
    return sweeps


def _end_with_parent() -> None:
    """In the run's process: end it when the sweep process dies (even by kill -9), so that no orphan run goes on
    unrecorded while a resumed sweep starts the same configuration again. Linux only; elsewhere a no-op."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def read_sweep_file(path: Path) -> dict:
    """The sweep config, checked by the sweep engine's schema and by this tool's config schema."""
    if not path.is_file():
        raise UserError(f"sweep file {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: cannot be read as YAML: {exc}") from None
    if not isinstance(spec, dict):
        raise UserError(f"{path}: a sweep file is a mapping (method, program, parameters, ...)")
    violations = _engine().schema_violations_from_proposed_config(spec)
    if violations:
        raise UserError(f"{path}: not a valid sweep: " + "; ".join(str(v) for v in violations))
    if "program" not in spec:
        raise UserError(f"{path}: the sweep names no program")
    for name, parameter in spec.get("parameters", {}).items():
        if schema_type(name) is None:
            raise UserError(f"{path}: parameter {name!r} is not a config key of codebert-heads "
                            f"(see `codebert-heads ablate --help`)")
        if schema_type(name) is str:
            values = parameter.get("values", [parameter["value"]] if "value" in parameter else [])
            spoiled = [v for v in values if not isinstance(v, str)]
            if spoiled:
                raise UserError(f"{path}: parameter {name!r} takes text, but YAML read {spoiled!r} as numbers "
                                f"(3.10 reads as 3.1): quote the values")
    if spec.get("method") == "bayes":
        raise UserError(f"{path}: method bayes needs the metrics a W&B server collects; here use grid or random "
                        f"(or run it with `wandb sweep` and `wandb agent`)")
    for item in spec.get("command", DEFAULT_COMMAND):
        if not isinstance(item, str):
            raise UserError(f"{path}: command item {item!r} is not text")
        if item.startswith("${") and item not in MACROS and not item.startswith("${envvar:"):
            raise UserError(f"{path}: command macro {item} is not supported here; use one of "
                            f"{', '.join(sorted(MACROS))}")
    return spec


def _format_value(value) -> str:
    return str(value)  # what the W&B agent does: None arrives as "None", True as "True"


def command_line(spec: dict, config: dict, interpreter: str = sys.executable) -> list[str]:
    """The argv `wandb agent` would run for one configuration ({name: value})."""
    expansions = {
        "${env}": ["/usr/bin/env"],
        "${interpreter}": [interpreter],
        "${program}": [str(spec["program"])],
        "${args}": [f"--{k}={_format_value(v)}" for k, v in config.items()],
        "${args_no_hyphens}": [f"{k}={_format_value(v)}" for k, v in config.items()],
        "${args_no_boolean_flags}": [f"--{k}" if v is True else f"--{k}={_format_value(v)}"
                                     for k, v in config.items() if v is not False],
        "${args_json}": [json.dumps(config)],
    }
    argv: list[str] = []
    for item in spec.get("command", DEFAULT_COMMAND):
        if item.startswith("${envvar:"):
            argv.append(os.environ.get(item[len("${envvar:"):-1], ""))
        else:
            argv.extend(expansions.get(item, [str(item)]))
    return argv


def check_command_lines(spec: dict, path: Path) -> int:
    """Every configuration the grid would launch is accepted by the config schema. Returns how many."""
    sweeps = _engine()
    runs = []
    while True:
        proposal = sweeps.next_run(spec, runs)
        if proposal is None or len(runs) > 10000:
            return len(runs)
        config = {k: v["value"] for k, v in proposal.config.items()}
        overrides = [f"{k}={_format_value(v)}" for k, v in config.items()]  # what the run's config will read
        try:
            load_config("ablate", [], overrides)
        except ConfigError as exc:
            raise UserError(f"{path}: the run {config} is refused by the config schema: {exc}") from None
        proposal.state = sweeps.RunState.finished
        runs.append(proposal)
        if spec.get("method") != "grid":
            return len(runs)


class SweepState:
    """Finished configurations of one sweep file, on disk, held by one process at a time (a second one on the
    same sweep would run every configuration again, into the same folders)."""

    def __init__(self, folder: Path):
        self.path = folder / "state.json"
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = open(folder / "lock", "a+")  # released by the system when this process ends, however
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another `codebert-heads sweep` is running this sweep ({folder}); wait for it, or "
                            f"start `wandb agent`s, which share a sweep through the W&B server") from None
        self.runs: list[dict] = json.loads(self.path.read_text())["runs"] if self.path.is_file() else []

    def close(self) -> None:
        self._lock.close()  # and with it the lock

    def record(self, config: dict, returncode: int) -> None:
        self.runs.append({"config": config, "state": "finished" if returncode == 0 else "failed",
                          "returncode": returncode})
        atomic_write_text(self.path, json.dumps({"runs": self.runs}, indent=2) + "\n")

    def forget_failed(self) -> None:
        self.runs = [r for r in self.runs if r["state"] == "finished"]
        atomic_write_text(self.path, json.dumps({"runs": self.runs}, indent=2) + "\n")

    def as_sweep_runs(self):
        sweeps = _engine()
        return [sweeps.SweepRun(config={k: {"value": v} for k, v in r["config"].items()},
                                state=sweeps.RunState.finished if r["state"] == "finished"
                                else sweeps.RunState.failed)
                for r in self.runs]


def run_sweep(cfg: DictConfig, sweep_file: str, count: int | None = None, retry_failed: bool = False,
              overrides: list[str] = (), config_files: list[str] = ()) -> Path:
    path = Path(sweep_file).expanduser()
    # A run's settings come from the sweep file alone, as with `wandb agent`; only where results go may be set here.
    extra = [o for o in overrides if not o.lstrip("-").startswith("runs_dir=")]
    if extra or config_files:
        raise UserError(f"codebert-heads sweep takes runs_dir=... only; set {', '.join(extra) or 'config files'} "
                        f"as parameters in the sweep file (`value: ...`), so every run and `wandb agent` agree")
    spec = read_sweep_file(path)
    total = check_command_lines(spec, path)  # refuse a bad grid before the first run, not halfway through
    # Keyed by what the file says, not how: an edited comment keeps the sweep's state.
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]
    state = SweepState(Path(cfg.runs_dir).expanduser() / "sweeps" / f"{path.stem}-{digest}")
    try:
        if retry_failed:
            state.forget_failed()
        _launch_runs(spec, path, state, total, count, cfg.runs_dir)
    finally:
        state.close()
    finished = sum(r["state"] == "finished" for r in state.runs)
    failed = len(state.runs) - finished
    print(f"sweep {path.stem}: {finished} runs finished, {failed} failed; state in {state.path}")
    return state.path.parent


def _launch_runs(spec: dict, path: Path, state: SweepState, total: int, count: int | None, runs_dir: str) -> None:
    """Launch the engine's next configurations, one at a time, recording each when its run ends."""
    # Runs put their folders beside the sweep's state: a runs_dir given here reaches them as one more key=value
    # (by default none is added, and the command line is exactly the agent's).
    passes_runs_dir = runs_dir != "runs" and "runs_dir" not in spec.get("parameters", {})
    extra = [f"runs_dir={runs_dir}"] if passes_runs_dir else []
    env = {**os.environ, "WANDB_MODE": "offline"}
    sweeps = _engine()
    launched = 0
    while count is None or launched < count:
        proposal = sweeps.next_run(spec, state.as_sweep_runs())
        if proposal is None:
            return
        config = {k: v["value"] for k, v in proposal.config.items()}
        argv = command_line(spec, config) + extra
        of_total = f" of {total}" if spec.get("method") == "grid" else ""
        print(f"[sweep {path.stem}] run {len(state.runs) + 1}{of_total}: {shlex.join(argv)}", file=sys.stderr,
              flush=True)
        returncode = subprocess.run(argv, env=env, preexec_fn=_end_with_parent).returncode
        if returncode in (130, -2):  # interrupted with Ctrl-C: stop, and leave the run for the next resume
            raise KeyboardInterrupt
        state.record(config, returncode)
        launched += 1
        if returncode != 0:
            how = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
            print(f"[sweep {path.stem}] run failed ({how}); `--retry-failed` runs it again", file=sys.stderr)
