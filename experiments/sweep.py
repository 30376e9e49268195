"""`codebert-heads sweep <file>`: run a W&B sweep file with no W&B server.

The next configuration comes from W&B's own open-source sweep engine (`sweeps.next_run`), the command line is
the one `wandb agent` would launch (the file's `command`, `${env} ${interpreter} ${program} ${args}` by default),
and every run logs offline. The sweep's state is a file in `<runs_dir>/sweeps/`: a configuration is recorded
once its run has finished, so an interrupted sweep resumes where it stopped and never reruns a finished one.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
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


def _engine():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydantic's notes on renamed options inside the engine
        import sweeps
    return sweeps


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
    for name in spec.get("parameters", {}):
        if schema_type(name) is None:
            raise UserError(f"{path}: parameter {name!r} is not a config key of codebert-heads "
                            f"(see `codebert-heads ablate --help`)")
    return spec


def _format_value(value) -> str:
    return str(value)  # what the W&B agent does: None arrives as "None", True as "True"


def command_line(spec: dict, config: dict, interpreter: str = sys.executable) -> list[str]:
    """The argv `wandb agent` would run for one configuration ({name: value})."""
    args = [f"--{k}={_format_value(v)}" for k, v in config.items()]
    args_no_hyphens = [f"{k}={_format_value(v)}" for k, v in config.items()]
    argv: list[str] = []
    for item in spec.get("command", DEFAULT_COMMAND):
        if item == "${env}":
            argv.append("/usr/bin/env")
        elif item == "${interpreter}":
            argv.append(interpreter)
        elif item == "${program}":
            argv.append(str(spec["program"]))
        elif item == "${args}":
            argv.extend(args)
        elif item == "${args_no_hyphens}":
            argv.extend(args_no_hyphens)
        elif item == "${args_json}":
            argv.append(json.dumps(config))
        else:
            argv.append(str(item))
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
        overrides = [a for a in command_line(spec, config)[3:] if "=" in a]
        try:
            load_config("ablate", [], overrides)
        except ConfigError as exc:
            raise UserError(f"{path}: the run {config} is refused by the config schema: {exc}") from None
        proposal.state = sweeps.RunState.finished
        runs.append(proposal)
        if spec.get("method") != "grid":
            return len(runs)


class SweepState:
    """Finished configurations of one sweep file, on disk."""

    def __init__(self, folder: Path):
        self.path = folder / "state.json"
        folder.mkdir(parents=True, exist_ok=True)
        self.runs: list[dict] = json.loads(self.path.read_text())["runs"] if self.path.is_file() else []

    def record(self, config: dict, returncode: int) -> None:
        self.runs.append({"config": config, "state": "finished" if returncode == 0 else "failed",
                          "returncode": returncode})
        atomic_write_text(self.path, json.dumps({"runs": self.runs}, indent=2) + "\n")

    def as_sweep_runs(self):
        sweeps = _engine()
        return [sweeps.SweepRun(config={k: {"value": v} for k, v in r["config"].items()},
                                state=sweeps.RunState.finished if r["state"] == "finished"
                                else sweeps.RunState.failed)
                for r in self.runs]


def run_sweep(cfg: DictConfig, sweep_file: str, count: int | None = None) -> Path:
    path = Path(sweep_file).expanduser()
    spec = read_sweep_file(path)
    total = check_command_lines(spec, path)  # refuse a bad grid before the first run, not halfway through
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    state = SweepState(Path(cfg.runs_dir).expanduser() / "sweeps" / f"{path.stem}-{digest}")
    env = {**os.environ, "WANDB_MODE": "offline"}
    launched = 0
    sweeps = _engine()
    while count is None or launched < count:
        proposal = sweeps.next_run(spec, state.as_sweep_runs())
        if proposal is None:
            break
        config = {k: v["value"] for k, v in proposal.config.items()}
        argv = command_line(spec, config)
        done = len(state.runs)
        print(f"[sweep {path.stem}] run {done + 1}" + (f" of {total}" if spec.get("method") == "grid" else "")
              + f": {shlex.join(argv)}", file=sys.stderr, flush=True)
        returncode = subprocess.run(argv, env=env).returncode
        if returncode in (130, -2):  # the run was interrupted: leave it for the next resume
            raise KeyboardInterrupt
        state.record(config, returncode)
        launched += 1
        if returncode != 0:
            print(f"[sweep {path.stem}] run failed with exit status {returncode}", file=sys.stderr)
    finished = sum(r["state"] == "finished" for r in state.runs)
    failed = len(state.runs) - finished
    print(f"sweep {path.stem}: {finished} runs finished, {failed} failed; state in {state.path}")
    return state.path.parent
