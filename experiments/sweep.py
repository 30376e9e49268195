"""`codebert-heads sweep <file>`: run a W&B sweep file with no W&B server (`tracking.local_sweep`).

The next configuration comes from W&B's own open-source sweep engine, the command line is the one `wandb agent`
would launch, and every run logs offline; the config schema checks every run's command line before the first.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from codesearch.errors import UserError
from heads.models import model_shape
from heads.naming import parse_head_spec
from tracking.local_sweep import run_local_sweep
from tracking.sweep_file import ProgramSchema

from .config import as_sections, load_config, schema_type


def _runnable(overrides: list[str]) -> None:
    """A run's settings fit the schema, and its heads exist in its model (read from the model's config)."""
    c = as_sections(load_config("ablate", [], overrides))
    parse_head_spec(c.ablation.head_spec, *model_shape(c.model.name))


# What the sweep files' program (`sweeps/ablate.py`) runs: its settings, and (here, before the first run) that
# every run's heads exist in its model.
SCHEMA = ProgramSchema(type_of=schema_type, check=lambda overrides: load_config("ablate", [], overrides))
RUNNABLE = ProgramSchema(type_of=schema_type, check=_runnable)


def run_sweep(cfg: DictConfig, sweep_file: str, count: int | None = None, retry_failed: bool = False,
              overrides: list[str] = (), config_files: list[str] = ()) -> Path:
    # A run's settings come from the sweep file alone, as with `wandb agent`; only where results go may be set here.
    extra = [o for o in overrides if not o.lstrip("-").startswith("runs_dir=")]
    if extra or config_files:
        raise UserError(f"codebert-heads sweep takes runs_dir=... only; set {', '.join(extra) or 'config files'} "
                        f"as parameters in the sweep file (`value: ...`), so every run and `wandb agent` agree")
    return run_local_sweep(Path(sweep_file).expanduser(), cfg.runs_dir, RUNNABLE, count, retry_failed)
