"""`codebert-heads sweep <file>`: run a W&B sweep file with no W&B server (`tracking.local_sweep`).

The next configuration comes from W&B's own open-source sweep engine, the command line is the one `wandb agent`
would launch, and every run logs offline; the config schema checks every run's command line before the first.
"""
from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import DictConfig

from codesearch.errors import UserError
from heads.models import model_shape
from heads.naming import parse_head_spec
from tracking.local_sweep import run_local_sweep
from tracking.sweep_file import ProgramSchema

from .config import as_sections, load_config, schema_type

# The programs sweep files launch (`sweeps/<command>.py`), each the command of its name.
PROGRAM_COMMANDS = ("ablate", "prune")


def program_command(sweep_file: Path) -> str:
    """The command a sweep file's program runs: `prune` for sweeps/prune.py, else `ablate` (sweeps/ablate.py)."""
    try:
        program = (yaml.safe_load(sweep_file.read_text()) or {}).get("program", "")
    except (OSError, yaml.YAMLError, AttributeError):
        return "ablate"   # read_sweep_file says what is wrong with the file
    stem = Path(str(program)).stem
    return stem if stem in PROGRAM_COMMANDS else "ablate"


def schema(command: str, runnable: bool = False) -> ProgramSchema:
    """What a sweep's program accepts: its command's settings, and (`runnable`, before the first run) that every
    run's heads exist in its model."""
    def check(overrides: list[str]) -> None:
        cfg = load_config(command, [], overrides)
        if runnable:
            c = as_sections(cfg)
            heads = parse_head_spec(c.ablation.head_spec, *model_shape(c.model.name))
            if command == "prune" and c.prune.interactions > len(heads):
                raise UserError(f"prune.interactions={c.prune.interactions}: more than the {len(heads)} heads "
                                f"pruned among")
    return ProgramSchema(type_of=schema_type, check=check)


def run_sweep(cfg: DictConfig, sweep_file: str, count: int | None = None, retry_failed: bool = False,
              overrides: list[str] = (), config_files: list[str] = ()) -> Path:
    # A run's settings come from the sweep file alone, as with `wandb agent`; only where results go may be set here.
    extra = [o for o in overrides if not o.lstrip("-").startswith("runs_dir=")]
    if extra or config_files:
        raise UserError(f"codebert-heads sweep takes runs_dir=... only; set {', '.join(extra) or 'config files'} "
                        f"as parameters in the sweep file (`value: ...`), so every run and `wandb agent` agree")
    path = Path(sweep_file).expanduser()
    return run_local_sweep(path, cfg.runs_dir, schema(program_command(path), runnable=True), count, retry_failed)
