"""A comparison of finished studies, from their runs to its tables, figures and record.

    comparison = Comparison(studies, settings, seed)   # two or more studies on one head grid, checked
    comparison.run()              # every pair: map correlations and overlaps; two paired studies: per-query tests
    files = comparison.export(folder)
    record = comparison.record()

Two studies get the head-by-head view (A, B, B − A: heads.csv, heatmaps, probes and attention side by side); more
give the matrix of pairwise correlations. A is the first study given, B the second: differences are B − A.
"""
from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from codesearch.errors import UserError
from codesearch.files import ResultFiles

from . import report
from .maps import correlation, importance_rank, overlap, side_by_side
from .paired import TEST_COLUMNS, baseline_test, head_tests
from .record import CompareRecord
from .settings import CompareConfig
from .studies import Study, baseline_ranks, check_grids, pairing

MAP_COLUMNS = ["delta_mrr", "significant"]


class Comparison:
    """Results as attributes after `run`: `correlations` and `overlaps` (one row per pair of studies and kind of
    evidence), and for two studies `heads` (one row per head), `baseline` (the paired baseline test, when paired),
    `evidence` (probe selectivity and attention statistics side by side); for more, `matrix`."""

    def __init__(self, studies: list[Study], settings: CompareConfig, seed: int):
        if len(studies) < 2:
            raise UserError("compare needs two or more studies")
        settings.check()
        self.studies, self.settings, self.seed = studies, settings, seed
        self.layers, self.heads_per_layer = check_grids(studies)
        self.maps = {s.name: single_head_map(s, settings) for s in studies}
        self.pairs = [(a, b, *pairing(a, b)) for a, b in combinations(studies, 2)]
        self.paired = len(studies) == 2 and self.pairs[0][2]
        self.heads: pd.DataFrame | None = None
        self.baseline: dict = {}
        self.evidence: dict[str, pd.DataFrame] = {}
        self.matrix: pd.DataFrame | None = None

    @property
    def pairing(self) -> str:
        if len(self.studies) == 2:
            return self.pairs[0][3]
        return ("no per-query paired test: with more than two studies only the maps are compared, pair by pair "
                "(run compare on two studies that share their queries and candidates for the paired tests)")

    def run(self) -> None:
        s = self.settings
        correlations, overlaps = [], []
        for a, b, _, _ in self.pairs:
            pair = {"study_a": a.name, "study_b": b.name}
            maps = pair_map(self.maps[a.name], self.maps[b.name])
            correlations.append({**pair, **correlation(maps["delta_mrr_a"], maps["delta_mrr_b"], "delta_mrr",
                                                       s.n_permutations, self.seed)})
            overlaps += [{**pair, **row} for row in map_overlaps(maps, s.top_k)]
            evidence = other_evidence(a, b)
            correlations += [{**pair, **correlation(frame["value_a"], frame["value_b"], key)}
                             for key, frame in evidence.items()]
        self.correlations, self.overlaps = pd.DataFrame(correlations), pd.DataFrame(overlaps)
        if len(self.studies) == 2:
            self._two(maps, evidence)
        else:
            self.matrix = correlation_matrix(self.correlations, [study.name for study in self.studies])

    def _two(self, maps: pd.DataFrame, evidence: dict[str, pd.DataFrame]) -> None:
        a, b = self.studies
        self.heads, self.evidence = maps, evidence
        if self.paired:
            wide_a, wide_b = baseline_ranks(a.ablation, self.settings), baseline_ranks(b.ablation, self.settings)
            self.baseline = baseline_test(wide_a, wide_b, self.settings, self.seed)
            tests = head_tests(maps["condition"].tolist(), wide_a, wide_b, self.settings, self.seed)
            self.heads = maps.merge(tests[["condition", *TEST_COLUMNS]], on="condition", how="left")

    # -- outputs
    def export(self, folder: Path) -> list[str]:
        folder = Path(folder)
        files = ResultFiles(folder)
        csv = files.csv

        csv("studies.csv", pd.DataFrame(self.study_facts()))
        csv("correlations.csv", self.correlations)
        csv("overlap.csv", self.overlaps)
        if self.heads is not None:
            a, b = self.studies
            csv("heads.csv", self.heads)
            caption = report.heads_caption(a, b, self.settings, self.paired, self.pairing, self.baseline)
            files.text("heads.md", report.to_markdown(report.printable(self.heads), caption))
            files.text("heads.tex", report.to_latex(report.printable(self.heads), caption))
            if self.baseline:
                csv("baseline_test.csv", pd.DataFrame([self.baseline]))
            for name, frame in report.evidence_tables(self.evidence).items():
                csv(name, frame)
            files += report.head_heatmaps(folder, self.heads, a, b, self.paired, self.settings, self.layers,
                                          self.heads_per_layer)
            files += report.evidence_heatmaps(folder, self.evidence, a, b, self.layers, self.heads_per_layer)
        else:
            maps = pd.concat([frame.assign(study=name) for name, frame in self.maps.items()], ignore_index=True)
            csv("maps.csv", maps[["study", "condition", "layer", "head", *MAP_COLUMNS]])
            csv("correlation_matrix.csv", self.matrix.rename_axis("study").reset_index())
            files += report.matrix_figure(folder, self.matrix, self.settings)
        files.text("summary.md", report.summary_markdown(self))
        return list(files)

    def study_facts(self) -> list[dict]:
        facts = []
        for study in self.studies:
            r = study.ablation.record
            facts.append({"name": study.name, "folder": str(study.folder), "ablation": str(study.ablation.folder),
                          "probes": str(study.probes.folder) if study.probes is not None else "",
                          "attention": " ".join(str(run.folder) for run in study.attention.values()),
                          "model": r.model.name, "layers": r.model.layers, "heads": r.model.heads,
                          "baseline_mrr": r.baseline_mrr, "protocol": r.protocol.protocol,
                          "n_queries": r.protocol.n_queries, "candidates_per_query": r.protocol.candidates_per_query,
                          "task_fingerprint": r.task_fingerprint})
        return facts

    def record(self) -> CompareRecord:
        has_changes = self.heads is not None and "change" in self.heads
        changes = self.heads if has_changes else pd.DataFrame({"condition": [], "change": []})
        common = set.intersection(*(set(frame["condition"]) for frame in self.maps.values()))
        return CompareRecord(
            studies=self.study_facts(), layers=self.layers, heads=self.heads_per_layer, mode=str(self.settings.mode),
            side=str(self.settings.side), paired=bool(self.paired), pairing=self.pairing,
            pairs=[{"study_a": a.name, "study_b": b.name, "paired": bool(ok), "why": why}
                   for a, b, ok, why in self.pairs],
            baseline_test=self.baseline, correction=str(self.settings.correction), alpha=self.settings.alpha,
            n_heads=len(common), gained=changes.loc[changes["change"] == "gained", "condition"].tolist(),
            lost=changes.loc[changes["change"] == "lost", "condition"].tolist(),
            correlations=_records(self.correlations), overlaps=_records(self.overlaps))


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts (NaN as null)."""
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
            for row in frame.to_dict("records")]


def single_head_map(study: Study, settings: CompareConfig) -> pd.DataFrame:
    """The study's single-head ΔMRR map of the configured mask: condition, layer, head, delta_mrr, significant."""
    frame = study.ablation.single_heads(str(settings.mode), str(settings.side))
    frame = frame[["condition", "layer", "head", *MAP_COLUMNS]].astype({"layer": int, "head": int,
                                                                         "significant": bool})
    return frame.sort_values(["layer", "head"], ignore_index=True)


def pair_map(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Two ΔMRR maps over the heads both have: each study's ΔMRR, significance and importance rank, and B − A."""
    frame = side_by_side(a, b, MAP_COLUMNS)
    frame["difference"] = frame["delta_mrr_b"] - frame["delta_mrr_a"]
    frame["rank_a"] = importance_rank(frame, "delta_mrr_a")
    frame["rank_b"] = importance_rank(frame, "delta_mrr_b")
    return frame[["condition", "layer", "head", "delta_mrr_a", "delta_mrr_b", "difference", "significant_a",
                  "significant_b", "rank_a", "rank_b"]]


def map_overlaps(maps: pd.DataFrame, top_k: int) -> list[dict]:
    """The overlap of each study's significant heads, and of its top_k most important heads."""
    n = len(maps)
    rows = [overlap("significant", maps.loc[maps["significant_a"], "condition"],
                    maps.loc[maps["significant_b"], "condition"], n)]
    if top_k > 0:
        k = min(top_k, n)
        rows.append(overlap(f"top_{k}", maps.loc[maps["rank_a"] <= k, "condition"],
                            maps.loc[maps["rank_b"] <= k, "condition"], n))
    return rows


def other_evidence(a: Study, b: Study) -> dict[str, pd.DataFrame]:
    """Per-head values both studies have besides ΔMRR, side by side (value_a, value_b, difference = B − A): probe
    selectivity per task (`selectivity:<task>`), attention statistics per input (`attention:<input>:<statistic>`)."""
    pairs = {}
    if a.probes is not None and b.probes is not None:
        probes_a, probes_b = a.probes.table, b.probes.table
        for task in sorted(set(probes_a["task"]) & set(probes_b["task"])):
            pairs[f"selectivity:{task}"] = (probes_a[probes_a["task"] == task], probes_b[probes_b["task"] == task],
                                            "selectivity")
    for kind in sorted(a.attention.keys() & b.attention.keys()):
        run_a, run_b = a.attention[kind], b.attention[kind]
        for name in [s for s in run_a.record.statistics if s in run_b.record.statistics]:
            pairs[f"attention:{kind}:{name}"] = (run_a.heads, run_b.heads, name)
    out = {}
    for key, (table_a, table_b, column) in pairs.items():
        frame = side_by_side(table_a, table_b, [column])
        frame = frame.rename(columns={f"{column}_a": "value_a", f"{column}_b": "value_b"})
        frame["difference"] = frame["value_b"] - frame["value_a"]
        out[key] = frame
    return out


def correlation_matrix(correlations: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Study × study Spearman rho of the ΔMRR maps (1 on the diagonal)."""
    matrix = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for _, row in correlations[correlations["evidence"] == "delta_mrr"].iterrows():
        matrix.loc[row["study_a"], row["study_b"]] = matrix.loc[row["study_b"], row["study_a"]] = row["spearman_rho"]
    return matrix
