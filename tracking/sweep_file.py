"""A W&B sweep file, read and checked as `wandb sweep` and `wandb agent` would use it: the sweep engine's own schema,
this tool's config schema for every parameter and every command line of the grid, and the argv the agent would
launch for one configuration.

The config schema is the program's: `ProgramSchema` says what type a key has and whether a run's `key=value` list
is accepted (the command line hands in its own).
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from codesearch.errors import UserError


@dataclass(frozen=True)
class ProgramSchema:
    type_of: Callable[[str], type | None]   # a dotted key's type; None for a key the program does not have
    check: Callable[[list[str]], None]      # raises UserError for a run's overrides the program would refuse


DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
MACROS = {"${env}", "${interpreter}", "${program}", "${args}", "${args_no_hyphens}", "${args_no_boolean_flags}",
          "${args_json}"}


def sweep_engine():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydantic's notes on renamed options inside the engine
        import sweeps
    return sweeps


def read_sweep_file(path: Path, schema: ProgramSchema) -> dict:
    """The sweep config, checked by the sweep engine's schema and by this tool's config schema."""
    if not path.is_file():
        raise UserError(f"sweep file {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: cannot be read as YAML: {exc}") from None
    if not isinstance(spec, dict):
        raise UserError(f"{path}: a sweep file is a mapping (method, program, parameters, ...)")
    violations = sweep_engine().schema_violations_from_proposed_config(spec)
    if violations:
        raise UserError(f"{path}: not a valid sweep: " + "; ".join(str(v) for v in violations))
    if "program" not in spec:
        raise UserError(f"{path}: the sweep names no program")
    for name, parameter in spec.get("parameters", {}).items():
        if schema.type_of(name) is None:
            raise UserError(f"{path}: parameter {name!r} is not a config key of codebert-heads "
                            f"(see `codebert-heads ablate --help`)")
        if schema.type_of(name) is str:
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


def check_command_lines(spec: dict, path: Path, schema: ProgramSchema) -> int:
    """Every configuration the grid would launch is accepted by the config schema. Returns how many."""
    sweeps = sweep_engine()
    runs = []
    while True:
        proposal = sweeps.next_run(spec, runs)
        if proposal is None or len(runs) > 10000:
            return len(runs)
        config = {k: v["value"] for k, v in proposal.config.items()}
        overrides = [f"{k}={_format_value(v)}" for k, v in config.items()]  # what the run's config will read
        try:
            schema.check(overrides)
        except UserError as exc:
            raise UserError(f"{path}: the run {config} is refused by the config schema: {exc}") from None
        proposal.state = sweeps.RunState.finished
        runs.append(proposal)
        if spec.get("method") != "grid":
            return len(runs)
