"""A run folder: what one command wrote, with its typed record written last, so that the record's presence marks a
finished run. Every layer that reads a finished run (aggregation, the probes' join with ablation, a report) reads it
through the same record type its command wrote: the writer and the readers cannot drift apart.
"""
from __future__ import annotations

import contextlib
import json
import platform
import time
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import ClassVar, get_args, get_origin, get_type_hints

from .errors import UserError
from .files import atomic_write_text

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


class Timings(dict):
    """Seconds per phase of a run, by name (`setup_s`, `baseline_s`, ...)."""

    @contextlib.contextmanager
    def phase(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - started

    def rounded(self) -> dict[str, float]:
        return {name: round(seconds, 3) for name, seconds in self.items()}


def flat(settings: dict, prefix: str = "") -> dict:
    """Nested settings as dotted keys, so a mismatch names the setting."""
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def differing_keys(stored: dict, current: dict) -> list[str]:
    """The keys whose values differ between two signatures (what a refused resume names)."""
    return sorted(key for key in set(stored) | set(current) if stored.get(key) != current.get(key))


def run_folders(parent: Path) -> list[Path]:
    """The run folders in `parent`: its subfolders but the hidden ones (a run's work folder `.<name>.partial`, a
    replaced run's `.<name>.*.old`)."""
    parent = Path(parent)
    return [p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")] if parent.is_dir() else []


@dataclass(kw_only=True)
class RunRecord:
    """What every command's record holds; each command's record adds its own fields."""
    FILE: ClassVar[str] = "run.json"
    command: str = ""
    study: str = ""
    config: dict = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def write(self, folder: Path) -> None:
        atomic_write_text(Path(folder) / self.FILE, json.dumps(asdict(self), indent=2, default=_json_default) + "\n")

    @classmethod
    def is_finished(cls, folder: Path) -> bool:
        return (Path(folder) / cls.FILE).is_file()

    @classmethod
    def read(cls, folder: Path):
        """The record of a finished run in `folder`; a clear error when there is none or it is of another kind."""
        path = Path(folder) / cls.FILE
        try:
            payload = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"{folder}: no {cls.FILE}, so no finished run") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not a readable run record ({exc})") from None
        return _from_dict(cls, payload, path)


def _typed(hint, value, origin: Path):
    """`value` read from JSON as the type the record declares: dataclasses, also inside lists and dict values."""
    if is_dataclass(hint) and isinstance(value, dict):
        return _from_dict(hint, value, origin)
    container, args = get_origin(hint), get_args(hint)
    if container is list and args and isinstance(value, list):
        return [_typed(args[0], item, origin) for item in value]
    if container is dict and len(args) == 2 and isinstance(value, dict):
        return {key: _typed(args[1], item, origin) for key, item in value.items()}
    return value


def _from_dict(cls, payload: dict, origin: Path):
    hints = get_type_hints(cls)
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if name not in payload]
    values = {f.name: _typed(hints[f.name], payload[f.name], origin) for f in fields(cls) if f.name in payload}
    try:
        return cls(**values)
    except TypeError:
        raise UserError(f"{origin}: a run record without {', '.join(missing) or 'its required fields'}: written by "
                        f"another version of codebert-heads or another command") from None


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
