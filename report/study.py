"""A study's finished runs, read through their record types only: what a report shows and never recomputes.

Each kind of run is optional; `StudyRuns.missing()` says which kinds the study lacks and the command that makes each.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ablation.record import AblationRecord, FinishedAblation, PruneRecord, SetAggregateRecord, find_ablation
from attention.record import AttentionRecord
from codesearch.errors import UserError
from codesearch.runfolder import RunRecord, run_folders
from comparison.record import CompareRecord
from heads.evaluation import EvaluationRecord
from patching.record import PatchRecord
from probing.record import FinishedProbes, find_probes
from training.record import FinetuneRecord

# What each kind of run is called in the report, and the command that makes it (for the `missing` section).
KINDS = {
    "evaluate": ("the baseline", "codebert-heads evaluate"),
    "ablate": ("the head ablation", "codebert-heads ablate"),
    "probe": ("the probes", "codebert-heads probe"),
    "attention": ("the attention statistics", "codebert-heads attention"),
    "prune": ("head sets: pruning curves and interactions", "codebert-heads prune"),
    "finetune": ("fine-tuning", "codebert-heads finetune"),
    "patch": ("activation patching (a cross-encoder's)", "codebert-heads patch"),
    "compare": ("comparisons with other studies", "codebert-heads compare <this study> <another>"),
}


@dataclass
class Folder:
    """A finished run: its folder and record."""
    folder: Path
    record: RunRecord

    def csv(self, name: str) -> pd.DataFrame | None:
        path = self.folder / name
        return pd.read_csv(path) if path.is_file() else None


@dataclass
class StudyRuns:
    name: str
    folder: Path
    evaluation: Folder | None = None
    ablation: FinishedAblation | None = None          # the zero-mask, both-sides map (aggregate or newest whole)
    ablations: list[Folder] = field(default_factory=list)   # every ablate run, other masks included
    probes: FinishedProbes | None = None
    attention: list[Folder] = field(default_factory=list)
    head_sets: Folder | None = None                   # aggregate-prune, else the newest prune run with tables
    finetunes: list[Folder] = field(default_factory=list)
    patches: list[Folder] = field(default_factory=list)
    comparisons: list[Folder] = field(default_factory=list)

    @classmethod
    def read(cls, folder: Path) -> StudyRuns:
        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"no study folder {folder}")
        runs = cls(folder.name, folder)
        evaluation = folder / "evaluate"
        if EvaluationRecord.is_finished(evaluation):
            runs.evaluation = Folder(evaluation, EvaluationRecord.read(evaluation))
        runs.ablation = find_ablation(folder)
        runs.ablations = _finished(folder / "ablate", AblationRecord)
        runs.probes = find_probes(folder)
        runs.attention = _finished(folder / "attention", AttentionRecord, need="heads.csv")
        runs.head_sets = _head_sets(folder)
        runs.finetunes = _finished(folder / "finetune", FinetuneRecord)
        runs.patches = _finished(folder / "patch", PatchRecord, need="patching.csv")
        compare_dir = folder.parent / "compare"
        runs.comparisons = [run for run in _finished(compare_dir, CompareRecord)
                            if any(s.get("name") == folder.name or str(folder) in str(s.get("folders", ""))
                                   for s in run.record.studies)]
        if not runs.kinds():
            raise UserError(f"{folder} holds no finished run of any command: is it a study folder (runs/<study>)?")
        return runs

    def kinds(self) -> list[str]:
        present = {"evaluate": self.evaluation, "ablate": self.ablation or self.ablations, "probe": self.probes,
                   "attention": self.attention, "prune": self.head_sets, "finetune": self.finetunes,
                   "patch": self.patches, "compare": self.comparisons}
        return [kind for kind, value in present.items() if value]

    def job_types(self) -> list[str]:
        """The W&B job types of the runs shown (what a W&B Report of the study selects)."""
        logged = {"evaluate": "baseline", "ablate": "ablation", "probe": "probe", "attention": "attention",
                  "prune": "prune", "finetune": "finetune", "patch": "patch", "compare": "compare"}
        types = [logged[kind] for kind in self.kinds()]
        aggregated = any((self.folder / name).is_dir() for name in ("aggregate", "aggregate-prune"))
        return types + ["aggregate"] * aggregated

    @property
    def cross_encoder(self) -> bool:
        """Whether the study's model is a cross-encoder (only it can be patched)."""
        if self.evaluation is not None:
            return getattr(self.evaluation.record, "kind", "") == "cross_encoder"
        return self.ablation is not None and self.ablation.record.__dict__.get("data", {}).get("kind") == \
            "cross_encoder"

    def missing(self) -> list[str]:
        return [kind for kind in KINDS if kind not in self.kinds() and (kind != "patch" or self.cross_encoder)]

    def records(self) -> list[Folder]:
        """Every run shown, for provenance: its command line and versions."""
        out = [self.evaluation] if self.evaluation else []
        if self.ablation is not None:
            out.append(Folder(self.ablation.folder, self.ablation.record))
        out += [run for run in self.ablations if self.ablation is None or run.folder != self.ablation.folder]
        if self.probes is not None:
            out.append(Folder(self.probes.folder, self.probes.record))
        out += self.attention + ([self.head_sets] if self.head_sets else []) + self.finetunes + self.patches
        out += self.comparisons
        return out


def _finished(parent: Path, record_type: type[RunRecord], need: str = "") -> list[Folder]:
    return [Folder(run, record_type.read(run)) for run in sorted(run_folders(parent))
            if record_type.is_finished(run) and (not need or (run / need).is_file())]


def _head_sets(folder: Path) -> Folder | None:
    aggregated = folder / "aggregate-prune"
    if SetAggregateRecord.is_finished(aggregated) and (aggregated / "plan.json").is_file():
        return Folder(aggregated, SetAggregateRecord.read(aggregated))
    with_tables = [run for run in _finished(folder / "prune", PruneRecord)
                   if any((run.folder / name).is_file() for name in ("curve.csv", "layer_heads.csv",
                                                                      "interactions.csv"))]
    return max(with_tables, key=lambda run: run.folder.stat().st_mtime) if with_tables else None
