"""`codebert-heads probe task=<name>`: linear probes on every head's output, with control tasks and a randomly
initialised copy of the model, over several seeds; joined with the study's head ablation when there is one."""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from scipy.stats import spearmanr

from ablation.heatmap import plot_matrix
from codesearch.errors import UserError
from codesearch.files import atomic_write_text
from heads.encoder import Encoder
from probing.features import FeatureStore, extract_features, random_init_copy, store_matches
from probing.probe import ProbeData, fit_probe, in_memory
from probing.syntax import IGNORE
from probing.tasks import (
    LabelledSplit,
    ProbeTask,
    check_classes,
    control_labels_by_type,
    control_labels_random,
    kept_positions,
    label_split,
    pair_features,
    resolve_tasks,
    stored_token_labels,
)

from .config import to_plain
from .data import load_data
from .evaluate import encoder_from_config, prepare_torch
from .runs import begin_run, package_versions, run_dir, study_dir, study_name, write_config, write_csv, write_json
from .tracking import RunLog, log_run, provenance

SPLITS = ("train", "valid", "test")
MARKER = "run.json"
COLUMNS = ["condition", "layer", "head", "task", "accuracy", "macro_f1", "majority", "control_accuracy",
           "selectivity", "random_init_accuracy", "n_train", "n_test", "seed_std"]


def _split_cfg(cfg: DictConfig, split: str, limit: int) -> DictConfig:
    return OmegaConf.merge(cfg, {"data": {"split": split, "max_queries": limit}})


def _signature(encoder: Encoder, split: LabelledSplit, keep: list[np.ndarray], kind: str, cfg: DictConfig,
               max_tokens: int) -> dict:
    """What a feature store holds: the inputs and which of their token positions (the labelled ones kept)."""
    digest = hashlib.sha256(json.dumps([split.token_ids, split.query_ids]).encode()).hexdigest()[:16]
    positions = hashlib.sha256(json.dumps([p.tolist() for p in keep]).encode()).hexdigest()[:16]
    return {"model": encoder.info.name, "revision": encoder.info.revision, "kind": kind, "split": split.name,
            "inputs": digest, "positions": positions, "max_tokens": max_tokens, "seed": cfg.seed,
            "batch_size": cfg.model.batch_size, "device": str(encoder.device)}


def _stores(cfg: DictConfig, encoder: Encoder, kind: str, split: LabelledSplit, max_tokens: int,
            need_queries: bool) -> tuple[FeatureStore, FeatureStore | None]:
    """The split's code features (tokens and pooled) and, for the matching task, its queries' pooled features."""
    root = study_dir(cfg) / "features" / f"{kind}-{encoder.info.revision.replace(':', '-')[:24]}" / split.name
    keep = kept_positions(split, max_tokens, cfg.seed)
    signature = _signature(encoder, split, keep, kind, cfg, max_tokens)
    code_folder, query_folder = root / "code", root / "query"
    if not store_matches(code_folder, signature):
        extract_features(encoder, split.token_ids, keep, code_folder, signature, cfg.model.batch_size,
                         progress=cfg.progress, desc=f"{kind} head features ({split.name} code)")
    queries = None
    if need_queries:
        if not store_matches(query_folder, signature):
            extract_features(encoder, split.query_ids, [np.zeros(0, dtype=np.int64)] * len(split.query_ids),
                             query_folder, signature, cfg.model.batch_size, progress=cfg.progress,
                             desc=f"{kind} head features ({split.name} queries)")
        queries = FeatureStore(query_folder)
    return FeatureStore(code_folder), queries


def task_data(task: ProbeTask, splits: dict[str, LabelledSplit], stores: dict, seed: int) -> dict[str, ProbeData]:
    """Each split's probe data for a task, from one model's feature stores."""
    out = {}
    for name, split in splits.items():
        code, queries = stores[name]
        if task.level == "token":
            labels, _ = stored_token_labels(split, code.meta, task)
            rows = np.nonzero(labels != IGNORE)[0]
            out[name] = ProbeData(code.tokens, labels).subset(rows)
        elif task.level == "sequence":
            out[name] = in_memory(code.pooled, split.sequence_labels[:, task.column])
        else:
            features, labels = pair_features(queries.pooled, code.pooled, seed)
            out[name] = in_memory(features, labels)
    return out


def _control(task: ProbeTask, data: dict[str, ProbeData], splits: dict[str, LabelledSplit], stores: dict,
             seed: int) -> dict[str, ProbeData]:
    n_classes = len(task.classes)
    labels = {name: d.labels for name, d in data.items()}
    if task.level == "token":
        types = {}
        for name, split in splits.items():
            all_labels, all_types = stored_token_labels(split, stores[name][0].meta, task)
            types[name] = all_types[all_labels != IGNORE]
        control = control_labels_by_type(labels["train"], types, n_classes, seed)
    else:
        control = control_labels_random(labels, labels["train"], n_classes, seed)
    return {name: ProbeData(d.features, control[name]) for name, d in data.items()}


def _seed_subset(data: ProbeData, seed: int, fraction: float) -> ProbeData:
    """Each seed trains on its own random share of the training set, so the spread over seeds is real."""
    rng = np.random.default_rng(seed)
    size = max(2, int(round(fraction * len(data))))
    return data.subset(np.sort(rng.choice(len(data), size=size, replace=False)))


def _fit(cfg: DictConfig, task: ProbeTask, data: dict[str, ProbeData], seed: int):
    p = cfg.probe
    return fit_probe(_seed_subset(data["train"], seed, p.train_fraction), data["valid"], data["test"],
                     len(task.classes), seed, l2=tuple(p.l2), steps=p.steps, batch_size=p.batch_size, lr=p.lr)


def prepare(cfg: DictConfig, tasks: list[ProbeTask], skip_one_class: bool = False):
    """(encoder, labelled splits, loaded data, feature stores by model kind and split, the tasks to probe,
    the tasks skipped with why), checking every input before computing features.

    A task with one class only in some split is an error, or (`skip_one_class`, for `task=all`) skipped with
    a warning: on a small corpus `all` still probes what it can."""
    p = cfg.probe
    encoder = encoder_from_config(cfg)

    # Data and labels first: every bad input is found before features are computed.
    limits = {"train": p.train_functions, "valid": p.eval_functions, "test": p.eval_functions}
    loaded = {name: load_data(_split_cfg(cfg, name, limits[name])) for name in SPLITS}
    splits = {name: label_split(name, encoder, loaded[name].task.examples, cfg.model.max_code_length,
                                cfg.model.max_query_length) for name in SPLITS}
    skipped: dict[str, str] = {}
    for task in tasks:
        if task.level == "token":
            by_split = {n: np.concatenate([t[:, task.column] for t in s.token_labels]) for n, s in splits.items()}
        elif task.level == "sequence":
            by_split = {n: s.sequence_labels[:, task.column] for n, s in splits.items()}
        else:
            by_split = {n: np.array([0, 1]) for n in splits}
        try:
            check_classes(task, by_split)
        except UserError as exc:
            if not skip_one_class:
                raise
            skipped[task.name] = str(exc)
            print(f"warning: skipped: {exc}", file=sys.stderr)
    tasks = [t for t in tasks if t.name not in skipped]
    if not tasks:
        raise UserError("no probing task has two classes in every split of this corpus: "
                        + "; ".join(skipped.values()))
    need_queries = any(t.level == "pair" for t in tasks)
    token_limits = {"train": p.max_train_tokens, "valid": p.max_eval_tokens, "test": p.max_eval_tokens}
    models = {"pretrained": encoder, "random_init": random_init_copy(encoder, p.random_init_seed)}
    stores = {kind: {name: _stores(cfg, model, kind, splits[name], token_limits[name], need_queries)
                     for name in SPLITS} for kind, model in models.items()}
    return encoder, splits, loaded, stores, tasks, skipped


def run_probe(cfg: DictConfig) -> Path:
    started = time.perf_counter()
    prepare_torch(cfg)
    p = cfg.probe
    tasks = resolve_tasks(str(p.task))
    out = run_dir(cfg, "probe", "all" if str(p.task) == "all" else str(p.task).replace(",", "+"))
    encoder, splits, loaded, stores, tasks, skipped = prepare(cfg, tasks, skip_one_class=str(p.task) == "all")
    timings = {"setup_and_features_s": time.perf_counter() - started}

    mark = time.perf_counter()
    rows = []
    seeds = [cfg.seed + k for k in range(p.seeds)]
    for task in tasks:
        print(f"probing {task.name} ({len(seeds)} seeds: probe, control task, random-init model)", file=sys.stderr)
        real = task_data(task, splits, stores["pretrained"], cfg.seed)
        random_init = task_data(task, splits, stores["random_init"], cfg.seed)
        results = {"real": [], "control": [], "random": []}
        for seed in seeds:
            results["real"].append(_fit(cfg, task, real, seed))
            results["control"].append(_fit(cfg, task, _control(task, real, splits, stores["pretrained"], seed), seed))
            results["random"].append(_fit(cfg, task, random_init, seed))
        rows.extend(_rows(task, real, results, encoder))
    timings["probes_s"] = time.perf_counter() - mark

    frame = pd.DataFrame(rows, columns=COLUMNS)
    begin_run(out, MARKER, ("probes.csv", "heatmap_*", "probe_vs_ablation.*", "config.yaml"))
    write_config(out / "config.yaml", cfg)
    write_csv(out / "probes.csv", frame)
    figures = []
    for task in tasks:
        part = frame[frame["task"] == task.name]
        matrix = part.pivot(index="layer", columns="head", values="selectivity").to_numpy()
        title = (f"{encoder.info.name}: probe selectivity (accuracy - control), {task.name}\n"
                 f"cells: x100; mean of {len(seeds)} seeds")
        figures += plot_matrix(matrix, title, "selectivity", out / f"heatmap_{task.name}", diverging=True)
    joined = _join_with_ablation(cfg, frame, out)
    timings["total_s"] = time.perf_counter() - started
    run = {
        "command": "probe", "study": study_name(cfg), "config": to_plain(cfg), "tasks": [t.name for t in tasks],
        "skipped_tasks": skipped,
        "seeds": seeds, "model": encoder.info.name, "model_revision": encoder.info.revision,
        "corpus_hash": loaded["test"].corpus_hash,
        "n_functions": {n: len(s.examples) for n, s in splits.items()},
        "ablation_join": joined, "files": ["probes.csv", "config.yaml"] + [f.name for f in figures]
        + (["probe_vs_ablation.csv", "probe_vs_ablation.md"] if joined.get("source") else []),
        "versions": package_versions(), "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    write_json(out / MARKER, run)
    _print_summary(frame, joined, out)
    images = {f"heatmap/{f.stem.removeprefix('heatmap_')}": f for f in figures if f.suffix == ".png"}
    log_run(cfg, study_name(cfg), study_dir(cfg), RunLog(
        job_type="probe", name=f"probe-{out.name}", results_dir=out, tables={"probes": frame}, images=images,
        summary={f"probe/{t}/max_selectivity": float(frame[frame.task == t].selectivity.max()) for t in run["tasks"]}
        | {f"probe/{t}/rho_selectivity_delta_mrr": v["spearman_rho"]
           for t, v in joined.get("by_task", {}).items() if v["spearman_rho"] is not None},
        tags=["probe"], **provenance(loaded["test"], encoder, study_name(cfg))))
    return out


def _rows(task: ProbeTask, real: dict[str, ProbeData], results: dict, encoder: Encoder) -> list[dict]:
    accuracy = np.stack([r.accuracy for r in results["real"]])           # [seeds, heads]
    macro_f1 = np.stack([r.macro_f1 for r in results["real"]])
    control = np.stack([r.accuracy for r in results["control"]])
    random_init = np.stack([r.accuracy for r in results["random"]])
    train_labels, test_labels = real["train"].labels, real["test"].labels
    majority = float(np.mean(test_labels == np.bincount(train_labels).argmax()))
    rows = []
    for index in range(accuracy.shape[1]):
        layer, head = divmod(index, encoder.n_heads)
        rows.append({
            "condition": f"L{layer}H{head}", "layer": layer, "head": head, "task": task.name,
            "accuracy": accuracy[:, index].mean(), "macro_f1": macro_f1[:, index].mean(), "majority": majority,
            "control_accuracy": control[:, index].mean(),
            "selectivity": (accuracy[:, index] - control[:, index]).mean(),
            "random_init_accuracy": random_init[:, index].mean(), "n_train": len(train_labels),
            "n_test": len(test_labels),
            "seed_std": accuracy[:, index].std(ddof=1) if accuracy.shape[0] > 1 else 0.0,
        })
    return rows


def _ablation_table(cfg: DictConfig) -> tuple[pd.DataFrame, Path] | None:
    """The study's single-head ablation table: `probe.ablation_run`, else the aggregate, else the newest whole map."""
    if cfg.probe.ablation_run:
        folder = Path(cfg.probe.ablation_run).expanduser()
        if not (folder / "importance.csv").is_file():
            raise UserError(f"probe.ablation_run={folder} has no importance.csv")
        candidates = [folder]
    else:
        study = study_dir(cfg)
        newest_first = sorted(study.glob("ablate/*"), key=lambda path: -path.stat().st_mtime)
        candidates = [study / "aggregate", *newest_first]
    for folder in candidates:
        if (folder / "run.json").is_file() and (folder / "importance.csv").is_file():
            table = pd.read_csv(folder / "importance.csv")
            singles = table.dropna(subset=["layer", "head"])
            singles = singles[(singles["mode"] == "zero") & (singles["side"] == "both")]
            if len(singles):
                return singles, folder
    return None


def _join_with_ablation(cfg: DictConfig, frame: pd.DataFrame, out: Path) -> dict:
    found = _ablation_table(cfg)
    if found is None:
        print("no single-head ablation of this study yet: run `codebert-heads ablate` with the same data and model "
              "settings to join probes with ablation", file=sys.stderr)
        return {"source": None}
    table, source = found
    joined = frame.merge(table[["condition", "delta_mrr", "ci_low", "ci_high", "p_adjusted", "significant"]],
                         on="condition", how="inner")
    by_task = {}
    for task, part in joined.groupby("task", sort=False):
        usable = len(part) >= 3 and part["selectivity"].nunique() > 1 and part["delta_mrr"].nunique() > 1
        result = spearmanr(part["selectivity"], part["delta_mrr"]) if usable else None
        by_task[task] = {"spearman_rho": float(result.statistic) if result else None,
                         "p_value": float(result.pvalue) if result else None, "n_heads": int(len(part))}
    columns = ["task", "condition", "layer", "head", "accuracy", "control_accuracy", "selectivity", "delta_mrr",
               "ci_low", "ci_high", "p_adjusted", "significant"]
    write_csv(out / "probe_vs_ablation.csv", joined[columns])
    lines = ["Rank correlation (Spearman) of each head's probe selectivity with its ablation ΔMRR "
             f"(from {source}); negative: heads that encode more lose more MRR when masked.", "",
             "| task | rho | p | heads |", "| --- | ---: | ---: | ---: |"]
    for task, values in by_task.items():
        rho = "–" if values["spearman_rho"] is None else f"{values['spearman_rho']:+.3f}"
        pval = "–" if values["p_value"] is None else f"{values['p_value']:.3g}"
        lines.append(f"| {task} | {rho} | {pval} | {values['n_heads']} |")
    lines += ["", joined[columns].to_markdown(index=False, floatfmt=".4f")]
    atomic_write_text(out / "probe_vs_ablation.md", "\n".join(lines) + "\n")
    return {"source": str(source), "by_task": by_task}


def _print_summary(frame: pd.DataFrame, joined: dict, out: Path) -> None:
    for task, part in frame.groupby("task", sort=False):
        best = part.sort_values("selectivity", ascending=False).iloc[0]
        print(f"  {task:>24}: best {best['condition']} accuracy {best['accuracy']:.3f} (control "
              f"{best['control_accuracy']:.3f}, random-init {best['random_init_accuracy']:.3f}, majority "
              f"{best['majority']:.3f}); selectivity {best['selectivity']:+.3f}")
    for task, values in joined.get("by_task", {}).items():
        if values["spearman_rho"] is not None:
            print(f"  {task:>24}: Spearman(selectivity, ΔMRR) {values['spearman_rho']:+.3f} "
                  f"over {values['n_heads']} heads")
    print(f"results: {out}")
