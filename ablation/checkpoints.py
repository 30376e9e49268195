"""Finished conditions on disk, one atomic file each, so an interrupted study resumes where it stopped.

A store belongs to one study: its signature (what decides the per-query ranks: data, model, batches, protocol,
masking settings, the baseline's ranks) is written beside the results, and a resume against a different
signature is refused rather than mixing two studies in one table.
"""
from __future__ import annotations

import json
import re
import shutil
import zlib
from pathlib import Path

import numpy as np

from codesearch.errors import UserError
from codesearch.files import atomic_directory, atomic_write_text
from codesearch.hashing import content_hash
from codesearch.runfolder import differing_keys

SIGNATURE = "signature.json"


def rr_hash(rr: np.ndarray) -> str:
    return content_hash(np.asarray(rr, dtype=np.float64).tobytes())


class ConditionStore:
    """The conditions of one study in `folder`. With `resume`, those already there are kept (or, when there are
    none, those of the `finished` run's store are taken over) if the signature matches; without, it starts empty."""

    def __init__(self, folder: Path, signature: dict, resume: bool, finished: Path | None = None):
        self.folder = Path(folder)
        self.signature = json.loads(json.dumps(signature, sort_keys=True))
        stored_path = self.folder / SIGNATURE
        if resume and not stored_path.is_file() and finished is not None and (Path(finished) / SIGNATURE).is_file():
            self._check(Path(finished))       # before anything is copied
            with atomic_directory(self.folder) as copy:   # whole or not at all
                shutil.copytree(finished, copy, dirs_exist_ok=True)
        self._signed = resume and stored_path.is_file()
        if self._signed:
            self._check(self.folder)
        else:   # the signature is written with the first condition: an empty store holds no file
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True, exist_ok=True)

    def _check(self, folder: Path) -> None:
        stored = json.loads((folder / SIGNATURE).read_text())
        if stored != self.signature:
            raise UserError(f"resume=true, but {folder} holds a study with other settings "
                            f"(differing: {', '.join(differing_keys(stored, self.signature))}); use another "
                            f"output_dir or resume=false")

    def _path(self, name: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")[:60]
        return self.folder / f"{slug}-{zlib.crc32(name.encode()):08x}.json"

    def done(self, name: str) -> bool:
        return self._path(name).is_file()

    def save(self, name: str, payload: dict) -> None:
        if not self._signed:
            atomic_write_text(self.folder / SIGNATURE, json.dumps(self.signature, indent=2, sort_keys=True) + "\n")
            self._signed = True
        atomic_write_text(self._path(name), json.dumps({"name": name, **payload}) + "\n")

    def load(self, name: str) -> dict:
        payload = json.loads(self._path(name).read_text())
        if payload.get("name") != name:
            raise UserError(f"{self._path(name)} holds {payload.get('name')!r}, not {name!r}")
        return payload
