"""The studies a comparison reads: each study's finished runs, through their record types only, and whether two
studies can be paired query by query."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ablation.record import FinishedAblation, find_ablation
from attention.record import AttentionRecord
from codesearch.errors import UserError
from codesearch.runfolder import run_folders
from probing.record import FinishedProbes, find_probes

from .settings import CompareConfig


@dataclass
class AttentionRun:
    folder: Path
    record: AttentionRecord
    heads: pd.DataFrame     # heads.csv: one row per head, a column per statistic


@dataclass
class Study:
    """One study's evidence: its single-head ablation (always), its probes and attention runs (when it has some)."""
    name: str
    folder: Path
    ablation: FinishedAblation
    probes: FinishedProbes | None = None
    attention: dict[str, AttentionRun] = field(default_factory=dict)    # by input: pair, code, query

    @property
    def grid(self) -> tuple[int, int]:
        return self.ablation.record.model.layers, self.ablation.record.model.heads

    @property
    def model(self) -> str:
        return self.ablation.record.model.name


def study_folder(text: str, runs_dir: Path) -> Path:
    """A study given as a folder, or as its name under runs_dir."""
    for candidate in (Path(text).expanduser(), Path(runs_dir).expanduser() / text):
        if candidate.is_dir():
            return candidate.resolve()
    raise UserError(f"no study folder {text!r} (looked in . and {runs_dir}/)")


def read_study(text: str, runs_dir: Path, settings: CompareConfig) -> Study:
    """The study's newest (or aggregated) single-head ablation of the configured mask, its newest probes and its
    attention runs. An ablation or aggregate folder given itself is that ablation alone."""
    folder = study_folder(text, runs_dir)
    mode, side = str(settings.mode), str(settings.side)
    if (folder / "importance.csv").is_file():
        return Study(folder.name, folder, _ablation(folder, find_ablation(folder, str(folder), mode, side), settings))
    ablation = _ablation(folder, find_ablation(folder, "", mode, side), settings)
    return Study(folder.name, folder, ablation, find_probes(folder), attention_runs(folder))


def _ablation(folder: Path, found: FinishedAblation | None, settings: CompareConfig) -> FinishedAblation:
    if found is None:
        raise UserError(f"{folder} has no finished single-head ablation ({settings.masking}): make one with "
                        f"`codebert-heads ablate` on that study's model and data "
                        f"(ablation.mode={settings.mode} ablation.side={settings.side}), or `codebert-heads "
                        f"aggregate {folder}` after a sweep over heads")
    return found


def attention_runs(folder: Path) -> dict[str, AttentionRun]:
    runs = {}
    for run in sorted(run_folders(folder / "attention")):
        if AttentionRecord.is_finished(run) and (run / "heads.csv").is_file():
            record = AttentionRecord.read(run)
            runs[record.input] = AttentionRun(run, record, pd.read_csv(run / "heads.csv"))
    return runs


def check_grids(studies: list[Study]) -> tuple[int, int]:
    """The one head grid (layers, heads per layer) all studies share; a clear refusal otherwise."""
    grids = {study.grid for study in studies}
    if len(grids) > 1:
        described = "; ".join(f"{s.name} ({s.model}): {s.grid[0]} layers × {s.grid[1]} heads" for s in studies)
        raise UserError(f"the studies' head grids differ ({described}): heads are compared only on the same "
                        f"layers × heads")
    return grids.pop()


def baseline_ranks(ablation: FinishedAblation, settings: CompareConfig) -> pd.DataFrame:
    """[queries, conditions] reciprocal ranks: the baseline and the single heads of the configured mask, by query id
    (sorted, so two studies' rows line up)."""
    frame = ablation.per_query
    if "mode" in frame:    # a study that mixes masks keeps each row's mask; the baseline has none
        frame = frame[(frame["condition"] == "baseline")
                      | ((frame["mode"] == str(settings.mode)) & (frame["side"] == str(settings.side)))]
    return frame.pivot(index="query_id", columns="condition", values="rr").sort_index()


def pairing(a: Study, b: Study) -> tuple[bool, str]:
    """Whether the two studies' per-query reciprocal ranks are paired (same queries, same candidates, same
    protocol), and the reason, said plainly."""
    ra, rb = a.ablation.record, b.ablation.record
    why_not = "no per-query paired test is possible: "
    if ra.task_fingerprint != rb.task_fingerprint:
        return False, (why_not + f"{a.name} and {b.name} were evaluated on different queries or candidates (task "
                       f"fingerprints {ra.task_fingerprint} and {rb.task_fingerprint} differ), so a query's "
                       f"reciprocal rank in one has no partner in the other; only the maps are compared")
    if ra.protocol.protocol != rb.protocol.protocol:
        return False, (why_not + f"the studies ranked under different MRR protocols ({ra.protocol.protocol} and "
                       f"{rb.protocol.protocol}), whose reciprocal ranks are not comparable; only the maps are "
                       f"compared")
    ids_a = set(a.ablation.per_query.loc[a.ablation.per_query["condition"] == "baseline", "query_id"])
    ids_b = set(b.ablation.per_query.loc[b.ablation.per_query["condition"] == "baseline", "query_id"])
    if ids_a != ids_b:
        return False, (why_not + f"the per_query.csv files of {a.ablation.folder} and {b.ablation.folder} hold "
                       f"different query ids ({len(ids_a ^ ids_b)} in one only); only the maps are compared")
    return True, (f"paired: the same {len(ids_a)} queries and candidates (task fingerprint {ra.task_fingerprint}, "
                  f"{ra.protocol.protocol} protocol), so each query's reciprocal ranks are compared across studies")


def distinct(studies: list[Study]) -> list[Study]:
    """The studies with names that tell them apart (a study's folder name, prefixed by its parent's when two
    folders share a name); a folder given twice is refused."""
    folders = [study.ablation.folder for study in studies]
    if len(set(folders)) < len(folders):
        raise UserError("the same study (or ablation run) was given twice: give each study once")
    names = [study.name for study in studies]
    for study in studies:
        if names.count(study.name) > 1:
            study.name = f"{study.folder.parent.name}-{study.name}"
    return studies
