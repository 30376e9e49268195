"""What each kind of run shows in W&B: its name, its history (one step per condition), its summary, tables and
images. Names follow the one head vocabulary: `abl-L3H7` for one head's run."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd

from ablation.conditions import Condition
from ablation.record import AblationRecord, AggregateRecord, PruneRecord, SetAggregateRecord, SetStudyRecord
from ablation.set_analysis import SetTables
from attention.record import AttentionRecord
from codesearch.loading import LoadedData
from comparison.record import CompareRecord
from heads.encoder import Encoder
from heads.evaluation import EvaluationRecord
from patching.record import PatchRecord
from probing.record import ProbeRecord
from training.record import FinetuneRecord

from .wandb_log import LinePlot, RunLog, provenance

SUMMARY_KEYS = ("mrr", "recall_at_1", "recall_at_5", "recall_at_10", "n_queries")


def baseline_log(folder: Path, record: EvaluationRecord, data: LoadedData, encoder: Encoder) -> RunLog:
    summary = {f"eval/{k}": getattr(record, k) for k in SUMMARY_KEYS}
    for protocol, values in record.protocols.items():
        summary.update({f"eval/{protocol}/{k}": getattr(values, k) for k in SUMMARY_KEYS})
    return RunLog(job_type="baseline", name=f"baseline-{record.protocol}", results_dir=folder, summary=summary,
                  tags=["baseline"], **provenance(data, encoder, record.study))


def agreement_summary(agreements: list[dict]) -> dict:
    """grad/spearman_rho (of the zero-mask, both-sides group when there is one) for a run's summary."""
    usable = [a for a in agreements if a["spearman_rho"] is not None]
    usable.sort(key=lambda a: (a["mode"], a["side"]) != ("zero", "both"))
    return {"grad/spearman_rho": usable[0]["spearman_rho"]} if usable else {}


def ablation_run_name(conditions: list[Condition], label: str, mode: str, side: str) -> str:
    """Deterministic: `abl-L3H7` for one head, else what the run's folder says; mode and side when not default."""
    head = conditions[0].single_head if len(conditions) == 1 else None
    name = f"abl-{head.name}" if head else "abl-" + label.rsplit("-", 3)[0]
    if (mode, side) != ("zero", "both"):
        name += f"-{mode}-{side}"
    return name


def condition_history(frame: pd.DataFrame, corrected: bool = True) -> list[dict]:
    """One W&B step per condition, with namespaced metrics. Without `corrected` (a run of one condition, e.g. one
    head of a sweep), the correction over a family of one means nothing: p_adjusted and significant are left out;
    `aggregate` gives them over the whole sweep."""
    steps = []
    for _, row in frame.iterrows():
        step = {"condition": row["condition"], "eval/baseline_mrr": row["baseline_mrr"],
                "eval/ablated_mrr": row["ablated_mrr"], "eval/delta_mrr": row["delta_mrr"],
                "stats/ci_low": row["ci_low"], "stats/ci_high": row["ci_high"], "stats/t_stat": row["t_stat"],
                "stats/p_value": row["p_value"], "stats/p_perm": row["p_perm"], "stats/p_adjusted": row["p_adjusted"],
                "stats/cohens_d": row["cohens_d"], "stats/significant": int(row["significant"]),
                "stats/n_queries": int(row["n_queries"])}
        if pd.notna(row["layer"]):
            step.update({"head/layer": int(row["layer"]), "head/index": int(row["head"])})
        if pd.notna(row["grad_score"]):
            step["grad/score"] = row["grad_score"]
        if not corrected:
            del step["stats/p_adjusted"], step["stats/significant"]
        steps.append(step)
    return steps


def _heatmap(folder: Path) -> dict[str, Path]:
    return {"heatmap": folder / "heatmap.png"} if (folder / "heatmap.png").is_file() else {}


def ablation_log(folder: Path, frame: pd.DataFrame, record: AblationRecord, name: str, tags: list[str],
                 data: LoadedData, encoder: Encoder) -> RunLog:
    single = len(frame) == 1
    history = condition_history(frame, corrected=not single)
    summary = {"eval/baseline_mrr": record.baseline_mrr, "stats/n_conditions": record.n_conditions}
    if single:  # a sweep's run: its one condition's numbers are the run's numbers
        summary.update({k: v for k, v in history[0].items() if k != "condition"})
    else:
        summary["stats/n_significant"] = record.n_significant
    summary.update(agreement_summary(record.gradient_vs_exact))
    summary.update(resource_summary(record))
    return RunLog(job_type="ablation", name=name, results_dir=folder, history=history, summary=summary,
                  tables={"importance": frame}, images=_heatmap(folder), tags=["ablation", *tags],
                  **provenance(data, encoder, record.study))


def resource_summary(record: AblationRecord) -> dict:
    """How the run fitted the machine: its memory (planned and measured) and, in reduced precision, how many ranks
    that precision changed against fp32."""
    out = {f"memory/{key}_gib": record.memory[key] / 2**30 for key in ("budget", "planned_peak", "measured_peak")
           if key in record.memory}
    agreement = record.precision.get("baseline")
    if agreement:
        out["precision/baseline_ranks_differing"] = agreement["ranks_differing"]
        out["precision/condition_ranks_differing"] = record.precision["condition"]["ranks_differing"]
    if record.shard:
        out["run/shard"] = record.shard
    return out


def aggregate_log(folder: Path, frame: pd.DataFrame, record: AggregateRecord) -> RunLog:
    return RunLog(job_type="aggregate", name="aggregate", results_dir=folder, history=condition_history(frame),
                  tables={"importance": frame}, images=_heatmap(folder),
                  summary={"eval/baseline_mrr": record.baseline_mrr, "stats/n_significant": record.n_significant,
                           "stats/n_conditions": record.n_conditions, "sweep/n_runs": record.n_runs,
                           **agreement_summary(record.gradient_vs_exact)},
                  artifact_metadata={"corpus_hash": record.corpus_hash, "model": asdict(record.model),
                                     "task_fingerprint": record.task_fingerprint})


def _curve_name(order: str, seed) -> str:
    return f"random-{int(seed)}" if order == "random" else order


FINDINGS = ("fraction_keeping_95", "best_head_per_layer_mrr", "redundant_pairs", "synergistic_pairs")


def set_study_view(folder: Path, tables: SetTables | None, record: SetStudyRecord) -> dict:
    """What a head-set run shows: one step per number of heads pruned (`prune/mrr/<order>` against
    `prune/fraction_pruned`, one W&B line per order), the curve as one chart, the tables, the figures and the cited
    numbers in the summary (`prune/<mode>-<side>/...` when it holds several ways of masking)."""
    summary = {"eval/baseline_mrr": record.baseline_mrr}
    single = any(key in record.findings for key in FINDINGS)
    for masking, found in ({"": record.findings} if single else record.findings).items():
        prefix = f"prune/{masking}/" if masking else "prune/"
        summary |= {f"{prefix}fraction_keeping_95/{order}": value
                    for order, value in found.get("fraction_keeping_95", {}).items()}
        if "best_head_per_layer_mrr" in found:
            summary[f"{prefix}best_head_per_layer_mrr"] = found["best_head_per_layer_mrr"]
        for kind in ("redundant_pairs", "synergistic_pairs"):
            if kind in found:
                summary[f"{prefix}n_{kind}"] = len(found[kind])
    view = {"summary": summary, "history": [], "tables": {}, "plots": {},
            "images": {f"prune/{Path(f).stem}": folder / f for f in record.files if f.endswith(".png")}}
    if tables is None:
        return view
    curve = tables.curve
    if len(curve) and curve[["mode", "side"]].drop_duplicates().shape[0] == 1:
        lines = {_curve_name(o, s): rows.sort_values("n_pruned")
                 for (o, s), rows in curve.groupby(["order", "seed"], dropna=False, sort=False)}
        for n, at in curve.groupby("n_pruned", sort=True):
            step = {"prune/n_pruned": int(n), "prune/fraction_pruned": float(at["fraction_pruned"].iloc[0])}
            step |= {f"prune/mrr/{_curve_name(r.order, r.seed)}": r.mrr for r in at.itertuples()}
            view["history"].append(step)
        view["plots"]["prune/curve_chart"] = LinePlot(
            xs=[rows["fraction_pruned"].tolist() for rows in lines.values()],
            ys=[rows["mrr"].tolist() for rows in lines.values()], keys=list(lines),
            title="MRR against the fraction of heads pruned", xname="fraction pruned")
    names = {"curve": tables.curve, "retention": tables.retention, "layer_heads": tables.layers,
             "interactions": tables.pairs, "shapley": tables.shapley}
    view["tables"] = {name: frame for name, frame in names.items() if len(frame)}
    return view


def prune_log(folder: Path, tables: SetTables | None, record: PruneRecord, data: LoadedData,
              encoder: Encoder) -> RunLog:
    view = set_study_view(folder, tables, record)
    if record.shard:
        view["summary"]["run/shard"] = record.shard
    name = f"prune-{folder.name}"
    return RunLog(job_type="prune", name=name, results_dir=folder, tags=["prune", record.mode, record.side],
                  **view, **provenance(data, encoder, record.study))


def set_aggregate_log(folder: Path, tables: SetTables, record: SetAggregateRecord) -> RunLog:
    view = set_study_view(folder, tables, record)
    view["summary"]["sweep/n_runs"] = record.n_runs
    return RunLog(job_type="aggregate", name="aggregate-prune", results_dir=folder, tags=["prune"], **view,
                  artifact_metadata={"corpus_hash": record.corpus_hash, "model": asdict(record.model),
                                     "task_fingerprint": record.task_fingerprint})


def probe_log(folder: Path, frame: pd.DataFrame, record: ProbeRecord, figures: list[str], data: LoadedData,
              encoder: Encoder) -> RunLog:
    images = {f"heatmap/{Path(f).stem.removeprefix('heatmap_')}": folder / f for f in figures if f.endswith(".png")}
    summary = {f"probe/{t}/max_selectivity": float(frame[frame.task == t].selectivity.max()) for t in record.tasks}
    summary |= {f"probe/{t}/rho_selectivity_delta_mrr": v["spearman_rho"]
                for t, v in record.ablation_join.get("by_task", {}).items() if v["spearman_rho"] is not None}
    return RunLog(job_type="probe", name=f"probe-{folder.name}", results_dir=folder, tables={"probes": frame},
                  images=images, summary=summary, tags=["probe"], **provenance(data, encoder, record.study))


def attention_log(folder: Path, heads: pd.DataFrame, record: AttentionRecord, figures: list[str], data: LoadedData,
                  encoder: Encoder) -> RunLog:
    """The heads table, the figures, and per statistic its strongest head and its correlation with ΔMRR."""
    images = {f"attention/{Path(f).stem}": folder / f for f in figures if f.endswith(".png")}
    summary = {f"attention/{name}/max": float(heads[name].max()) for name in record.statistics
               if heads[name].notna().any()}
    strongest = record.findings.get("strongest_correlation")
    if strongest:
        summary["attention/strongest_rho"] = strongest["spearman_rho"]
    return RunLog(job_type="attention", name=f"attention-{record.input}", results_dir=folder,
                  tables={"heads": heads}, images=images, summary=summary, tags=["attention", record.input],
                  **provenance(data, encoder, record.study))


def patch_log(folder: Path, table: pd.DataFrame, record: PatchRecord, files: list[str], data: LoadedData,
              encoder: Encoder) -> RunLog:
    """The per-head table, the two heatmaps, and the strongest heads and correlations in the summary."""
    images = {f"patch/{Path(f).stem}": folder / f for f in files if f.endswith(".png")}
    f = record.findings
    summary = {"patch/n_examples": record.n_examples, "patch/mean_clean_score": f["mean_clean_score"],
               "patch/mean_corrupt_score": f["mean_corrupt_score"], "patch/max_restored": float(table["restored"].max()),
               "patch/max_destroyed": float(table["destroyed"].max()),
               "patch/n_significant_restored": f["n_significant_restored"]}
    for row in f.get("ablation_correlation", []):
        if row["spearman_rho"] == row["spearman_rho"]:   # not NaN
            summary[f"patch/{row['measure']}_vs_ablation_rho"] = row["spearman_rho"]
    return RunLog(job_type="patch", name=f"patch-n{record.n_examples}", results_dir=folder, tables={"heads": table},
                  images=images, summary=summary, tags=["patch"], **provenance(data, encoder, record.study))


def compare_log(folder: Path, heads: pd.DataFrame | None, correlations: pd.DataFrame, overlaps: pd.DataFrame,
                record: CompareRecord) -> RunLog:
    """Two studies: one step per head (both ΔMRR, B − A, and the paired test when there is one); any number: the
    correlations and overlaps as tables, the first pair's numbers in the summary."""
    summary = {"compare/n_studies": len(record.studies), "compare/paired": int(record.paired),
               "compare/n_heads": record.n_heads}
    first = correlations[correlations["evidence"] == "delta_mrr"].iloc[0]
    for key in ("spearman_rho", "spearman_p_perm", "kendall_tau", "kendall_p_perm"):
        if pd.notna(first[key]):
            summary[f"compare/{key}"] = float(first[key])
    same_pair = (overlaps["study_a"] == first["study_a"]) & (overlaps["study_b"] == first["study_b"])
    for _, row in overlaps[same_pair].iterrows():
        if pd.notna(row["jaccard"]):
            summary[f"compare/jaccard_{row['heads']}"] = float(row["jaccard"])
    if record.baseline_test:
        summary |= {f"compare/baseline_{key}": record.baseline_test[key]
                    for key in ("mrr_a", "mrr_b", "difference", "ci_low", "ci_high", "p_value")}
        summary |= {"compare/n_gained": len(record.gained), "compare/n_lost": len(record.lost)}
    history = []
    for _, row in (heads if heads is not None else pd.DataFrame()).iterrows():
        step = {"condition": row["condition"], "head/layer": int(row["layer"]), "head/index": int(row["head"]),
                "compare/delta_mrr_a": row["delta_mrr_a"], "compare/delta_mrr_b": row["delta_mrr_b"],
                "compare/difference": row["difference"]}
        if "p_value" in row:
            step |= {"stats/p_value": row["p_value"], "stats/p_adjusted": row["p_adjusted"],
                     "stats/significant": int(row["significant"])}
        history.append(step)
    tables = {"correlations": correlations, "overlap": overlaps}
    if heads is not None:
        tables["heads"] = heads
    images = {f"compare/{Path(f).stem}": folder / f for f in record.files if f.endswith(".png")}
    return RunLog(job_type="compare", name=f"compare-{folder.name}", results_dir=folder, history=history,
                  summary=summary, tables=tables, images=images, tags=["compare"],
                  artifact_metadata={"studies": [{k: s[k] for k in ("name", "model", "task_fingerprint")}
                                                 for s in record.studies]})


def finetune_log(folder: Path, record: FinetuneRecord, history: pd.DataFrame, data: LoadedData, encoder: Encoder,
                 run=None) -> RunLog:
    """Lightning's logger drew the curves (train/loss, val/mrr) into `run` while training; at the end the same run
    gets the test numbers, the epochs table, and the run folder (the model and its card) as its results."""
    summary = {"val/best_mrr": record.best_val_mrr, "train/best_epoch": record.best_epoch,
               "train/steps": record.steps, "test/mrr": record.test_mrr}
    for protocol, values in record.test.items():
        summary.update({f"test/{protocol}/{k}": getattr(values, k) for k in SUMMARY_KEYS})
    return RunLog(job_type="finetune", name=f"finetune-{folder.name}", results_dir=folder, summary=summary,
                  tables={"epochs": history}, tags=["finetune"], run=run, **provenance(data, encoder, record.study))
