"""Where a command's results go, and the one object that owns a run from start to finish.

A study is one baseline (model, corpus, data selection, evaluation settings): its folder
`<runs_dir>/<study>/` holds the runs of every command on it, the cached baseline and the offline W&B runs.
`Run` owns one run: its folder, the marker that says it finished (its typed record, written last), the timings,
`config.yaml`, and the W&B log sent once the folder is complete.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from codesearch.files import atomic_write_text
from codesearch.runfolder import RunRecord, Timings, package_versions
from tracking.wandb_log import RunLog, log_run

from .config import study_key, to_plain
from .schema import STUDY_SECTIONS


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")[:40] or "x"


def study_name(cfg: DictConfig) -> str:
    """`<model>-<data>-<split>-<hash>`: the same baseline settings always name the same study."""
    model = "minilm" if cfg.model.name == "builtin" else Path(str(cfg.model.name)).name
    data = (f"stdlib-{cfg.data.language}" if cfg.data.path == "builtin" and not cfg.corpus.source_dir
            else Path(str(cfg.corpus.source_dir or cfg.data.path)).name)
    return f"{_slug(model)}-{_slug(data)}-{cfg.data.split}-{study_key(cfg, STUDY_SECTIONS)}"


def study_dir(cfg: DictConfig) -> Path:
    """The study's folder under `runs_dir`: its runs, its cached baseline and its offline W&B runs."""
    return Path(cfg.runs_dir).expanduser() / study_name(cfg)


def prepare_torch(cfg: DictConfig) -> None:
    import torch  # here: the commands that need no model start without it

    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)


class Run:
    """One run of a command:

        run = Run(cfg, "ablate", label)          # its folder: output_dir, else <study>/ablate/<label>
        with run.timings.phase("setup_s"): ...
        run.begin(AblationRecord, outputs)       # just before the first result file
        ...                                      # write results into run.folder
        record = run.finish(record, files)       # the record last: it marks the run finished
        run.log(ablation_log(...))               # then W&B
    """

    def __init__(self, cfg: DictConfig, command: str, label: str = "", study: str | None = None,
                 home: Path | None = None):
        self.cfg, self.command = cfg, command
        self.study = study or study_name(cfg)
        self.home = Path(home) if home is not None else study_dir(cfg)
        default = self.home / command / label if label else self.home / command
        self.folder = Path(cfg.output_dir).expanduser() if cfg.output_dir else default
        self.timings = Timings()
        self._started = time.perf_counter()

    def begin(self, record_type: type[RunRecord], outputs: tuple[str, ...] = ()) -> None:
        """Open the folder: an earlier run's record goes first, so that an interruption from here on can never
        leave new partial files beside an old record that says "finished"; then the earlier run's other outputs
        (glob patterns), so that none of them is taken for this run's; then this run's config.yaml."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / record_type.FILE).unlink(missing_ok=True)
        for pattern in (*outputs, "config.yaml"):
            for path in self.folder.glob(pattern):
                if path.is_file():
                    path.unlink()
        atomic_write_text(self.folder / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(to_plain(self.cfg))))

    def elapsed(self) -> float:
        return time.perf_counter() - self._started

    def finish(self, record: RunRecord, files: list[str]) -> RunRecord:
        """Complete the record with what every run records and write it: last, its presence marks the run
        finished."""
        self.timings["total_s"] = self.elapsed()
        record.command, record.study, record.config = self.command, self.study, to_plain(self.cfg)
        record.files = [*files, "config.yaml"]
        record.versions = package_versions()
        record.timings = self.timings.rounded()
        record.write(self.folder)
        return record

    def log(self, log: RunLog) -> None:
        """Send the finished run to W&B (a failure there is reported; the folder is complete already)."""
        log_run(OmegaConf.to_object(self.cfg.wandb), to_plain(self.cfg), self.study, self.home, log)
