"""Run folders: where a command's results go, written so that nothing half-done looks finished.

Every result file is written atomically; `metrics.json` (or the command's own summary file) is written last,
so its presence marks a finished run.
"""
from __future__ import annotations

import json
import platform
import re
from importlib import metadata
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from codesearch.files import atomic_write_csv, atomic_write_text

from .config import study_key, to_plain

PACKAGES = ("codebert-heads", "torch", "transformers", "tokenizers", "numpy", "scipy", "statsmodels",
            "scikit-learn", "pandas", "omegaconf", "tree-sitter", "wandb", "pytorch-lightning")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")[:40] or "x"


# The settings that decide a study's baseline: every run of a study shares its queries, pool and model.
STUDY_SECTIONS = ("data", "corpus", "model", "eval")


def study_name(cfg: DictConfig) -> str:
    """`<model>-<data>-<split>-<hash>`: the same baseline settings always name the same study."""
    model = "minilm" if cfg.model.name == "builtin" else Path(str(cfg.model.name)).name
    data = (f"stdlib-{cfg.data.language}" if cfg.data.path == "builtin" and not cfg.corpus.source_dir
            else Path(str(cfg.corpus.source_dir or cfg.data.path)).name)
    return f"{_slug(model)}-{_slug(data)}-{cfg.data.split}-{study_key(cfg, STUDY_SECTIONS)}"


def study_dir(cfg: DictConfig) -> Path:
    """The study's folder under `runs_dir`: its runs, its cached baseline and its offline W&B runs."""
    return Path(cfg.runs_dir).expanduser() / study_name(cfg)


def run_dir(cfg: DictConfig, command: str, label: str = "") -> Path:
    """`output_dir` if set, else `<study>/<command>[/<label>]`."""
    if cfg.output_dir:
        return Path(cfg.output_dir).expanduser()
    folder = study_dir(cfg) / command
    return folder / label if label else folder


def begin_run(out: Path, marker: str, outputs: tuple[str, ...] = ()) -> None:
    """Open a run folder: an earlier run's completion marker goes first, so that an interruption from here
    on can never leave new partial files beside an old marker that says "finished"; then the earlier run's other
    outputs (glob patterns), so that none of them is taken for this run's."""
    out.mkdir(parents=True, exist_ok=True)
    (out / marker).unlink(missing_ok=True)
    for pattern in outputs:
        for path in out.glob(pattern):
            if path.is_file():
                path.unlink()


def write_json(path: Path, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_csv(path, frame)


def write_config(path: Path, cfg: DictConfig) -> None:
    from omegaconf import OmegaConf

    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(to_plain(cfg))))


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
