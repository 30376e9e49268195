"""Where a command's results go, and the one object that owns a run from start to finish.

A study is one baseline (model, corpus, data selection, evaluation settings): its folder
`<runs_dir>/<study>/` holds the runs of every command on it, the cached baseline and the offline W&B runs.
`Run` owns one run: its folder, a work folder beside it where this run's files are written (`.<name>.partial`,
locked while the run holds it), the timings, `config.yaml`, the typed record (written last) and the W&B log. The
work folder replaces the run's folder only once the record is written, so a finished run is kept until its
replacement is complete, and an interrupted run never leaves a folder that looks finished.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from codesearch.errors import UserError
from codesearch.files import atomic_write_text, recover_directory, replace_directory
from codesearch.hashing import content_hash
from codesearch.runfolder import RunRecord, Timings, package_versions
from tracking.wandb_log import RunLog, environment_mode, log_run

from .config import to_plain
from .schema import STUDY_SECTIONS


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")[:40] or "x"


def study_key(cfg: DictConfig, sections: tuple[str, ...], leave_out: tuple[str, ...] = ()) -> str:
    """A short hash of the settings that decide a study's numbers (`leave_out`: dotted keys of those sections that
    do not, such as how the work is cut to fit in memory)."""
    plain = to_plain(cfg)
    payload = {name: plain[name] for name in sections if name in plain}
    for key in leave_out:
        section, name = key.split(".", 1)
        payload.get(section, {}).pop(name, None)
    payload["seed"] = plain["seed"]
    return content_hash(payload, 8)


def study_name(cfg: DictConfig) -> str:
    """`<model>-<data>-<split>-<hash>`: the same baseline settings always name the same study."""
    model = "minilm" if cfg.model.name == "builtin" else Path(str(cfg.model.name)).name
    data = (f"stdlib-{cfg.data.language}" if cfg.data.path == "builtin" and not cfg.corpus.source_dir
            else Path(str(cfg.corpus.source_dir or cfg.data.path)).name)
    return f"{_slug(model)}-{_slug(data)}-{cfg.data.split}-{study_key(cfg, STUDY_SECTIONS)}"


def study_dir(cfg: DictConfig) -> Path:
    """The study's folder under `runs_dir`: its runs, its cached baseline and its offline W&B runs."""
    return Path(cfg.runs_dir).expanduser() / study_name(cfg)


def _recorded_command(path: Path) -> str:
    """The command a run record says made it ("" when the record is unreadable)."""
    try:
        return str(json.loads(path.read_text()).get("command", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def prepare_torch(cfg: DictConfig) -> None:
    import torch  # here: the commands that need no model start without it

    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)


class Run:
    """One run of a command, as a context manager:

        with Run(cfg, "ablate", AblationRecord, label, resumable=("conditions",)) as run:   # folder checked, held
            with run.timings.phase("setup_s"): ...    # checks and long work that writes no result
            run.begin(resume=True)                     # the work folder, cleared but for what a resume keeps
            ...                                        # write results into run.work
            record = run.finish(record, files)         # the record last, then the work folder becomes run.folder
            run.log(ablation_log(...))                 # then W&B

    On entry it refuses a folder that is no run folder of this command, and a folder another run is writing, and
    checks that it can write there: before any model is loaded (a finished run a crash left aside mid-replacement
    is put back first). Interrupted with finished work in its `resumable` entries, a run keeps its work folder (the
    same command with resume=true continues it); otherwise the work folder is removed. Files a user added to a
    finished run's folder are carried over when a rerun replaces it.
    """

    def __init__(self, cfg: DictConfig, command: str, record_type: type[RunRecord], label: str = "",
                 study: str | None = None, home: Path | None = None, resumable: tuple[str, ...] = (),
                 name: str = "", output_dir: str | None = None):
        """The run's folder: `output_dir` (by default the config's), else `<study>/<name or command>[/<label>]`."""
        self.cfg, self.command, self.record_type, self.resumable = cfg, command, record_type, resumable
        self.study = study or study_name(cfg)
        self.home = Path(home) if home is not None else study_dir(cfg)
        default = self.home / (name or command) / label if label else self.home / (name or command)
        output_dir = cfg.output_dir if output_dir is None else output_dir
        self.folder = Path(os.path.abspath(Path(output_dir).expanduser())) if output_dir else default
        if not self.folder.name:
            raise UserError(f"output_dir={output_dir}: the root of the file system cannot be a run folder")
        self.work = self.folder.with_name(f".{self.folder.name}.partial")
        self.timings = Timings()
        self._started = time.perf_counter()
        self._lock: int | None = None
        self._created = self._begun = self._finished = False

    def __enter__(self) -> Run:
        if str(self.cfg.wandb.mode) == "auto":
            environment_mode()  # a misspelt $WANDB_MODE is said now, not after the run
        recovered = recover_directory(self.folder)
        if recovered is not None:
            print(f"note: {self.folder} was put back from {recovered.name}, where an interrupted replacement had "
                  f"left it", file=sys.stderr)
        self._check_folder()
        try:
            self._created = not self.work.exists()
            self.work.mkdir(parents=True, exist_ok=True)
            self._lock = os.open(self.work, os.O_RDONLY)
        except OSError as exc:
            self.__exit__(*sys.exc_info())
            raise UserError(f"cannot read or write {self.work.parent}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(self._lock).st_ino != os.stat(self.work).st_ino:   # removed and made again meanwhile
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            self._created = False  # the other run's: left alone
            self.__exit__(*sys.exc_info())
            raise UserError(f"another run is writing {self.folder} right now (it holds {self.work}); wait for it, "
                            f"or choose another output_dir") from None
        try:   # a read-only or full disk shows here, not at the end
            atomic_write_text(self.work / ".write-check", "a full disk refuses even this\n")
            (self.work / ".write-check").unlink()
        except OSError as exc:
            self.__exit__(*sys.exc_info())
            raise UserError(f"cannot write into {self.work.parent}: {exc.strerror}") from None
        return self

    def _check_folder(self) -> None:
        """The folder is empty, absent, or a finished run of this command: anything else is never written over."""
        folder = self.folder
        if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
            return
        if not (folder.is_dir() and self.record_type.is_finished(folder)):
            raise UserError(f"{folder} exists and is no finished `{self.command}` run (it has no "
                            f"{self.record_type.FILE}): it is never written over; choose another output_dir")
        command = _recorded_command(folder / self.record_type.FILE)
        if command != self.command:
            raise UserError(f"{folder} holds a finished `{command or 'unknown'}` run: a `{self.command}` run never "
                            f"replaces it; choose another output_dir")

    def __exit__(self, exc_type, exc, _traceback) -> bool:
        if not self._finished and self.work.exists():
            if self.resumable and self._begun and self._has_work():
                print(f"this run's work so far is kept in {self.work}: the same command with resume=true continues "
                      f"from it", file=sys.stderr)
            elif self._begun or self._created:
                shutil.rmtree(self.work, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        return False

    def _has_work(self) -> bool:
        """Whether the entries a resume takes over hold any file: else there is nothing to continue from."""
        return any(path.is_file() for name in self.resumable for path in (self.work / name).rglob("*"))

    def elapsed(self) -> float:
        return time.perf_counter() - self._started

    def begin(self, resume: bool = False) -> None:
        """Start writing: the work folder is emptied (but for the `resumable` entries, when resuming), and this
        run's config.yaml is written."""
        keep = self.resumable if resume else ()
        for entry in self.work.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        self._begun = True
        atomic_write_text(self.work / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(to_plain(self.cfg))))

    def finish(self, record: RunRecord, files: list[str]) -> RunRecord:
        """Complete the record with what every run records and write it last; then the work folder takes the run
        folder's place (a finished run there is replaced only now; files a user added to it are carried over)."""
        self.timings["total_s"] = self.elapsed()
        record.command, record.study, record.config = self.command, self.study, to_plain(self.cfg)
        record.files = [*files, "config.yaml"]
        record.versions = package_versions()
        record.timings = self.timings.rounded()
        ours = self._run_entries()
        record.write(self.work)
        replace_directory(self.work, self.folder, carry=lambda name: name not in ours)
        self._finished = True
        return record

    def _run_entries(self) -> set[str]:
        """What the finished run in the folder (if any) wrote itself: its record's files, the record, the config
        and what a resume keeps. Anything else in it is a user's and outlives the replacement."""
        entries = {self.record_type.FILE, "config.yaml", *self.resumable}
        if self.record_type.is_finished(self.folder):
            with contextlib.suppress(UserError, TypeError, ValueError):
                entries |= {Path(name).parts[0] for name in self.record_type.read(self.folder).files if name}
        return entries

    def log(self, log: RunLog) -> None:
        """Send the finished run to W&B (a failure there is reported; the folder is complete already)."""
        log_run(OmegaConf.to_object(self.cfg.wandb), to_plain(self.cfg), self.study, self.home, log)
