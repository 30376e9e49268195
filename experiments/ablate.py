"""`codebert-heads ablate`: the head-ablation study.

The baseline is computed once; each condition's per-query reciprocal ranks come from the cached layer sweep on
the same queries and pool, and are saved as soon as they are known (`resume=true` continues from there). Then
every condition is tested against the baseline query by query, corrected over all conditions, and exported.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ablation.checkpoints import ConditionStore, rr_hash
from ablation.conditions import Condition, build_conditions
from ablation.engine import head_means, run_conditions
from ablation.report import (
    ConditionResult,
    ReportSettings,
    StudyFacts,
    gradient_agreement,
    importance_report,
    write_report,
)
from ablation.stats import unreachable_significance
from codesearch.errors import UserError
from codesearch.metrics import evaluate_protocol
from heads.naming import head_set_name

from .config import study_key, to_plain
from .data import load_data
from .evaluate import encoder_from_config, prepare_torch, retrieval_settings
from .runs import begin_run, package_versions, run_dir, study_dir, study_name, write_config, write_csv, write_json
from .study_cache import baseline_embeddings, study_gradient_scores
from .tracking import RunLog, log_run, provenance

MARKER = "run.json"
REPORT_FILES = ("importance.*", "heatmap*.png", "heatmap*.svg", "per_query.csv", "grad_scores.csv", "config.yaml")


def _held_out_texts(cfg: DictConfig, evaluated) -> tuple[list[str], list[str]]:
    """Queries and code of the held-out split, for each head's mean output (mean mode)."""
    split = str(cfg.ablation.mean_split)
    if split == str(cfg.data.split):
        raise UserError(f"ablation.mean_split={split} is the evaluated split: the mean must come "
                        f"from held-out data (e.g. ablation.mean_split=valid)")
    held_cfg = OmegaConf.merge(cfg, {"data": {"split": split, "max_queries": cfg.ablation.mean_samples}})
    task = load_data(held_cfg).task
    if set(task.query_ids) & set(evaluated.query_ids):
        raise UserError(f"ablation.mean_split={split} gives no held-out data: it shares queries with the evaluated "
                        f"split (a pairs file has no splits); use a corpus with a {split} split")
    return task.queries, [task.candidates[g] for g in task.gold]


def _signature(cfg: DictConfig, encoder, task, baseline_rr: np.ndarray) -> dict:
    """Everything that decides a condition's per-query ranks."""
    plain = to_plain(cfg)
    signature = {
        "task": task.fingerprint(), "model": encoder.info.name, "revision": encoder.info.revision,
        "recipe": encoder.info.recipe, "model_settings": {k: plain["model"][k] for k in
                                                          ("max_query_length", "max_code_length", "batch_size")},
        "eval": plain["eval"], "mode": plain["ablation"]["mode"], "side": plain["ablation"]["side"],
        "baseline_rr": rr_hash(baseline_rr),
    }
    if cfg.ablation.mode == "mean":
        signature["mean_set"] = {k: plain["ablation"][k] for k in ("mean_split", "mean_samples")}
        signature["seed"] = cfg.seed
    return signature


def run_ablate(cfg: DictConfig) -> Path:
    started = time.perf_counter()
    timings: dict[str, float] = {}
    prepare_torch(cfg)
    a = cfg.ablation
    out = run_dir(cfg, "ablate", ablation_label(cfg))

    # Everything that can be wrong is checked before any long work.
    encoder = encoder_from_config(cfg)
    conditions = build_conditions(head_spec(cfg), a.per_head, encoder.n_layers, encoder.n_heads, str(a.mode),
                                  str(a.side))
    if a.top_k and not a.per_head:
        raise UserError("ablation.top_k picks single heads: it needs ablation.per_head=true")
    warning = unreachable_significance(min(a.top_k or len(conditions), len(conditions)), report_settings(cfg))
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    data = load_data(cfg)
    task = data.task
    settings = retrieval_settings(cfg)
    means = None
    if a.mode == "mean":
        held_queries, held_codes = _held_out_texts(cfg, task)
        means = {"query": head_means(encoder, held_queries, settings.max_query_length, settings.batch_size),
                 "code": head_means(encoder, held_codes, settings.max_code_length, settings.batch_size)}
    timings["setup_s"] = time.perf_counter() - started

    # The baseline, once per study, on exactly the batches the sweep uses.
    mark = time.perf_counter()
    print(f"baseline: {len(task)} queries, {len(task.candidates)} candidates", file=sys.stderr)
    baseline = baseline_embeddings(cfg, encoder, task, settings)
    gold = np.asarray(task.gold)

    def ranks_of(queries, candidates):
        return evaluate_protocol(settings.protocol, queries, candidates, gold, rank_cutoff=settings.rank_cutoff,
                                 csn_batch_size=settings.csn_batch_size)

    base = ranks_of(baseline.queries, baseline.candidates)
    timings["baseline_s"] = time.perf_counter() - mark

    begin_run(out, MARKER, REPORT_FILES)
    write_config(out / "config.yaml", cfg)
    store = ConditionStore(out / "conditions", _signature(cfg, encoder, task, base.rr), resume=cfg.resume)

    # First-order estimate for every head, once per study (a sweep's runs and a resumed run reuse it).
    grad = None
    if a.gradient:
        mark = time.perf_counter()
        grad = study_gradient_scores(cfg, encoder, task, settings, baseline, a.grad_temperature, str(a.side))
        timings["gradient_s"] = time.perf_counter() - mark
        if a.top_k:
            by_score = sorted(conditions, key=lambda c: (-abs(grad[c.single_head.layer, c.single_head.head]), c.name))
            chosen = {c.name for c in by_score[:a.top_k]}
            conditions = [c for c in conditions if c.name in chosen]

    # Exact ablations, each saved as soon as it is done.
    mark = time.perf_counter()
    pending = [c for c in conditions if not store.done(c.name)]
    if len(pending) < len(conditions):
        print(f"resuming: {len(conditions) - len(pending)} of {len(conditions)} conditions already done",
              file=sys.stderr)

    def save(condition: Condition, query_emb, code_emb):
        result = ranks_of(baseline.queries if query_emb is None else query_emb,
                          baseline.candidates if code_emb is None else code_emb)
        store.save(condition.name, {"rr": result.rr.tolist(), "rank": result.ranks.tolist()})

    run_conditions(encoder, task.queries, task.candidates, pending, save, settings.max_query_length,
                   settings.max_code_length, settings.batch_size, means=means, max_cache_gb=a.max_cache_gb,
                   progress=cfg.progress)
    timings["ablation_s"] = time.perf_counter() - mark

    # Statistics and exports.
    mark = time.perf_counter()
    query_ids = [task.query_ids[i] for i in base.query_index]
    results = []
    for condition in conditions:
        head = condition.single_head
        results.append(ConditionResult(condition, np.asarray(store.load(condition.name)["rr"]),
                                       None if grad is None or head is None else grad[head.layer, head.head]))
    settings_report = report_settings(cfg)
    frame, per_query = importance_report(base.rr, results, query_ids, settings_report)
    facts = StudyFacts(model=encoder.info.name, baseline_mrr=base.mrr, n_queries=len(base.rr),
                       protocol=base.protocol, candidates_per_query=base.candidates_per_query,
                       modes=(str(a.mode),), sides=(str(a.side),))
    files = write_report(out, frame, per_query, facts, settings_report, encoder.n_layers, encoder.n_heads)
    if grad is not None:
        write_csv(out / "grad_scores.csv", pd.DataFrame(
            [{"condition": f"L{layer}H{head}", "layer": layer, "head": head, "grad_score": grad[layer, head]}
             for layer in range(encoder.n_layers) for head in range(encoder.n_heads)]))
        files.append("grad_scores.csv")
    timings["statistics_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - started

    agreement = gradient_agreement(frame)
    run = {
        "command": "ablate",
        "config": to_plain(cfg),
        "model": {"name": encoder.info.name, "revision": encoder.info.revision, "recipe": encoder.info.recipe,
                  "layers": encoder.n_layers, "heads": encoder.n_heads, "head_dim": encoder.head_dim},
        "data": {"source": task.source, "form": task.form, "n_queries": len(task),
                 "n_candidates": len(task.candidates)},
        "corpus_hash": data.corpus_hash,
        "task_fingerprint": task.fingerprint(),
        "protocol": base.summary(),
        "baseline_mrr": base.mrr,
        "n_conditions": len(conditions),
        "n_significant": int(frame["significant"].sum()),
        "correction": str(a.correction),
        "primary_test": str(a.primary_test),
        "alpha": a.alpha,
        "gradient_vs_exact": agreement,
        "study": study_name(cfg),
        "files": files + ["config.yaml"],
        "versions": package_versions(),
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    write_json(out / MARKER, run)  # last: its presence marks a finished study
    _print_summary(frame, run, out)
    log_run(cfg, study_name(cfg), study_dir(cfg), ablation_log(cfg, out, frame, run, data, encoder, conditions))
    return out


def agreement_summary(agreements: list[dict]) -> dict:
    """grad/spearman_rho (of the zero-mask, both-sides group when there is one) for a run's summary."""
    usable = [a for a in agreements if a["spearman_rho"] is not None]
    usable.sort(key=lambda a: (a["mode"], a["side"]) != ("zero", "both"))
    return {"grad/spearman_rho": usable[0]["spearman_rho"]} if usable else {}


def run_name(cfg: DictConfig, conditions: list[Condition]) -> str:
    """Deterministic: `abl-L03-H07` for one head, else what the folder says; mode and side when not default."""
    a = cfg.ablation
    head = conditions[0].single_head if len(conditions) == 1 else None
    name = f"abl-L{head.layer:02d}-H{head.head:02d}" if head else "abl-" + ablation_label(cfg).rsplit("-", 3)[0]
    if (a.mode, a.side) != ("zero", "both"):
        name += f"-{a.mode}-{a.side}"
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


def ablation_log(cfg: DictConfig, out: Path, frame: pd.DataFrame, run: dict, data, encoder,
                 conditions: list[Condition]) -> RunLog:
    single = len(frame) == 1
    history = condition_history(frame, corrected=not single)
    summary = {"eval/baseline_mrr": run["baseline_mrr"], "stats/n_conditions": run["n_conditions"]}
    if single:  # a sweep's run: its one condition's numbers are the run's numbers
        summary.update({k: v for k, v in history[0].items() if k != "condition"})
    else:
        summary["stats/n_significant"] = run["n_significant"]
    summary.update(agreement_summary(run["gradient_vs_exact"]))
    images = {"heatmap": out / "heatmap.png"} if (out / "heatmap.png").is_file() else {}
    log = RunLog(job_type="ablation", name=run_name(cfg, conditions), results_dir=out, history=history,
                 summary=summary, tables={"importance": frame}, images=images,
                 tags=["ablation", str(cfg.ablation.mode), str(cfg.ablation.side)],
                 **provenance(data, encoder, study_name(cfg)))
    return log


def report_settings(cfg: DictConfig) -> ReportSettings:
    a = cfg.ablation
    return ReportSettings(seed=cfg.seed, alpha=a.alpha, correction=str(a.correction),
                          primary_test=str(a.primary_test), n_bootstrap=a.n_bootstrap,
                          n_permutations=a.n_permutations)


def head_spec(cfg: DictConfig) -> str:
    """The heads to ablate: `ablation.heads`, or the one head `ablation.layer`/`ablation.head` name."""
    a = cfg.ablation
    return f"L{a.layer}H{a.head}" if a.layer is not None else str(a.heads)


def ablation_label(cfg: DictConfig) -> str:
    """The run's folder in its study: what is ablated, how, where, and a hash of the other settings."""
    a = cfg.ablation
    spec = head_spec(cfg)
    heads = "all" if spec.strip() in ("*", "*.*", "all") else head_set_name(spec).replace("*", "x")
    if not a.per_head:
        heads = "set-" + heads
    return f"{heads[:40]}-{a.mode}-{a.side}-{study_key(cfg, ('ablation',))[:6]}"


def _print_summary(frame: pd.DataFrame, run: dict, out: Path) -> None:
    print(f"baseline MRR {run['baseline_mrr']:.4f} ({run['protocol']['protocol']}, {run['protocol']['n_queries']} "
          f"queries); {run['n_conditions']} conditions, {run['n_significant']} significant "
          f"({run['correction']}, alpha {run['alpha']})")
    for _, row in frame.sort_values("delta_mrr").head(5).iterrows():
        print(f"  {row['condition']:>10}: ΔMRR {row['delta_mrr']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"
              f"  p_adj {row['p_adjusted']:.2g}{'  *' if row['significant'] else ''}")
    for agreement in run["gradient_vs_exact"]:
        if agreement["spearman_rho"] is not None:
            print(f"  gradient estimate vs exact ablation ({agreement['mode']}, {agreement['side']}): Spearman rho "
                  f"{agreement['spearman_rho']:.3f} over {agreement['n_heads']} heads")
    print(f"results: {out}")
