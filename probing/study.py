"""A probing study: every head's output probed for each task, with control tasks and a randomly initialised copy of
the model, over several seeds.

    study = ProbingStudy(encoder, probe, model, seed, cache_dir)
    study.prepare(tasks, data, corpus, skip_one_class)   # labels and every check first, then the feature stores
    frame = study.run()                                   # probes.csv's rows
    files = study.export(folder)                          # probes.csv and a heatmap per task

Feature stores are kept in `cache_dir/features/` (the study's folder), keyed by what they hold, and reused across
tasks, seeds and runs.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from codesearch.errors import UserError
from codesearch.files import atomic_write_csv
from codesearch.hashing import content_hash
from codesearch.loading import LoadedData, load_data
from codesearch.settings import SPLITS, CorpusConfig, DataConfig
from codesearch.syntax import IGNORE
from heads.encoder import Encoder
from heads.heatmap import plot_matrix
from heads.models import random_init_copy
from heads.naming import HeadId
from heads.settings import ModelConfig

from .features import FeatureStore, extract_features, store_matches
from .probe import ProbeData, ProbeResult, fit_probe, in_memory
from .record import ProbeRecord
from .settings import ProbeConfig
from .tasks import (
    LabelledSplit,
    ProbeTask,
    check_classes,
    control_labels_by_type,
    control_labels_random,
    kept_positions,
    label_split,
    pair_features,
    stored_token_labels,
)

COLUMNS = ["condition", "layer", "head", "task", "accuracy", "macro_f1", "majority", "control_accuracy",
           "selectivity", "random_init_accuracy", "n_train", "n_test", "seed_std"]
Stores = dict[str, tuple[FeatureStore, "FeatureStore | None"]]   # split -> (code features, query features)


class ProbingStudy:
    """Results as attributes: `tasks` (those probed), `skipped` (task -> why), `splits`, `loaded` (each split's
    data), `frame` (one row per task and head)."""

    def __init__(self, encoder: Encoder, probe: ProbeConfig, model: ModelConfig, seed: int, cache_dir: Path,
                 progress: bool = True):
        self.encoder, self.probe, self.model = encoder, probe, model
        self.seed, self.cache_dir, self.progress = seed, Path(cache_dir), progress
        self.seeds = [seed + k for k in range(probe.seeds)]
        self.tasks: list[ProbeTask] = []
        self.skipped: dict[str, str] = {}
        self.splits: dict[str, LabelledSplit] = {}
        self.loaded: dict[str, LoadedData] = {}
        self.stores: dict[str, Stores] = {}

    # -- data, labels and features
    def prepare(self, tasks: list[ProbeTask], data: DataConfig, corpus: CorpusConfig,
                skip_one_class: bool = False) -> None:
        """Every split's functions and labels, the class checks, then each model's feature stores.

        A task with one class only in some split is an error, or (`skip_one_class`, for `task=all`) skipped with
        a warning: on a small corpus `all` still probes what it can."""
        m = self.model
        self.loaded = {name: load_data(data.of_split(name, self.probe.functions(name)), corpus, self.seed,
                                       self.progress) for name in SPLITS}
        self.splits = {name: label_split(name, self.encoder, self.loaded[name].task.examples, m.max_code_length,
                                         m.max_query_length) for name in SPLITS}
        for task in tasks:
            try:
                check_classes(task, {name: self._labels(task, split) for name, split in self.splits.items()})
            except UserError as exc:
                if not skip_one_class:
                    raise
                self.skipped[task.name] = str(exc)
                print(f"warning: skipped: {exc}", file=sys.stderr)
        self.tasks = [t for t in tasks if t.name not in self.skipped]
        if not self.tasks:
            raise UserError("no probing task has two classes in every split of this corpus: "
                            + "; ".join(self.skipped.values()))
        need_queries = any(t.level == "pair" for t in self.tasks)
        random_init = random_init_copy(self.encoder, self.probe.random_init_seed)
        models = {"pretrained": self.encoder, "random_init": random_init}
        self.stores = {kind: {name: self._stores(model, kind, self.splits[name], need_queries) for name in SPLITS}
                       for kind, model in models.items()}

    @staticmethod
    def _labels(task: ProbeTask, split: LabelledSplit) -> np.ndarray:
        if task.level == "token":
            return np.concatenate([t[:, task.column] for t in split.token_labels])
        if task.level == "sequence":
            return split.sequence_labels[:, task.column]
        return np.array([0, 1])  # pairs: a match and a mismatch for every function

    def _stores(self, encoder: Encoder, kind: str, split: LabelledSplit,
                need_queries: bool) -> tuple[FeatureStore, FeatureStore | None]:
        """The split's code features (tokens and pooled) and, for the matching task, its queries' pooled features."""
        root = self.cache_dir / "features" / f"{kind}-{encoder.info.revision.replace(':', '-')[:24]}" / split.name
        max_tokens = self.probe.tokens(split.name)
        keep = kept_positions(split, max_tokens, self.seed)
        # What a store holds: the inputs and which of their token positions (the labelled ones kept).
        signature = {"model": encoder.info.name, "revision": encoder.info.revision, "kind": kind, "split": split.name,
                     "inputs": content_hash([split.token_ids, split.query_ids]),
                     "positions": content_hash([p.tolist() for p in keep]), "max_tokens": max_tokens,
                     "seed": self.seed, "batch_size": self.model.batch_size, "device": str(encoder.device)}
        code_folder, query_folder = root / "code", root / "query"
        if not store_matches(code_folder, signature):
            extract_features(encoder, split.token_ids, keep, code_folder, signature, self.model.batch_size,
                             progress=self.progress, desc=f"{kind} head features ({split.name} code)")
        queries = None
        if need_queries:
            if not store_matches(query_folder, signature):
                extract_features(encoder, split.query_ids, [np.zeros(0, dtype=np.int64)] * len(split.query_ids),
                                 query_folder, signature, self.model.batch_size, progress=self.progress,
                                 desc=f"{kind} head features ({split.name} queries)")
            queries = FeatureStore(query_folder)
        return FeatureStore(code_folder), queries

    # -- probes
    def run(self) -> pd.DataFrame:
        rows = []
        for task in self.tasks:
            print(f"probing {task.name} ({len(self.seeds)} seeds: probe, control task, random-init model)",
                  file=sys.stderr)
            real = task_data(task, self.splits, self.stores["pretrained"], self.seed)
            random_init = task_data(task, self.splits, self.stores["random_init"], self.seed)
            results = {"real": [], "control": [], "random": []}
            for seed in self.seeds:
                results["real"].append(self._fit(task, real, seed))
                control = control_data(task, real, self.splits, self.stores["pretrained"], seed)
                results["control"].append(self._fit(task, control, seed))
                results["random"].append(self._fit(task, random_init, seed))
            rows.extend(task_rows(task, real, results, self.encoder.n_heads))
        self.frame = pd.DataFrame(rows, columns=COLUMNS)
        return self.frame

    def _fit(self, task: ProbeTask, data: dict[str, ProbeData], seed: int) -> ProbeResult:
        train = seed_subset(data["train"], seed, self.probe.train_fraction)
        return fit_probe(train, data["valid"], data["test"], len(task.classes), seed, self.probe)

    def export(self, folder: Path) -> list[str]:
        """probes.csv and a layer x head map of selectivity per task; returns the file names."""
        folder = Path(folder)
        atomic_write_csv(folder / "probes.csv", self.frame)
        files = ["probes.csv"]
        for task in self.tasks:
            part = self.frame[self.frame["task"] == task.name]
            matrix = part.pivot(index="layer", columns="head", values="selectivity").to_numpy()
            title = (f"{self.encoder.info.name}: probe selectivity (accuracy - control), {task.name}\n"
                     f"cells: x100; mean of {len(self.seeds)} seeds")
            files += [p.name for p in plot_matrix(matrix, title, "selectivity", folder / f"heatmap_{task.name}",
                                                  diverging=True)]
        return files

    def record(self, ablation_join: dict) -> ProbeRecord:
        """The run's record (the run fills in config, files, timings)."""
        return ProbeRecord(tasks=[t.name for t in self.tasks], skipped_tasks=self.skipped, seeds=self.seeds,
                           model=self.encoder.info.name, model_revision=self.encoder.info.revision,
                           corpus_hash=self.loaded["test"].corpus_hash,
                           n_functions={name: len(split.examples) for name, split in self.splits.items()},
                           ablation_join=ablation_join)


def task_data(task: ProbeTask, splits: dict[str, LabelledSplit], stores: Stores, seed: int) -> dict[str, ProbeData]:
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


def control_data(task: ProbeTask, data: dict[str, ProbeData], splits: dict[str, LabelledSplit], stores: Stores,
                 seed: int) -> dict[str, ProbeData]:
    """The same features with the control task's labels (Hewitt & Liang)."""
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


def seed_subset(data: ProbeData, seed: int, fraction: float) -> ProbeData:
    """Each seed trains on its own random share of the training set, so the spread over seeds is real."""
    rng = np.random.default_rng(seed)
    size = max(2, int(round(fraction * len(data))))
    return data.subset(np.sort(rng.choice(len(data), size=size, replace=False)))


def task_rows(task: ProbeTask, real: dict[str, ProbeData], results: dict[str, list[ProbeResult]],
              heads_per_layer: int) -> list[dict]:
    """One row per head: each figure the mean over seeds."""
    accuracy = np.stack([r.accuracy for r in results["real"]])           # [seeds, heads]
    macro_f1 = np.stack([r.macro_f1 for r in results["real"]])
    control = np.stack([r.accuracy for r in results["control"]])
    random_init = np.stack([r.accuracy for r in results["random"]])
    train_labels, test_labels = real["train"].labels, real["test"].labels
    majority = float(np.mean(test_labels == np.bincount(train_labels).argmax()))
    rows = []
    for flat in range(accuracy.shape[1]):
        head = HeadId.from_flat(flat, heads_per_layer)
        rows.append({
            "condition": head.name, "layer": head.layer, "head": head.index, "task": task.name,
            "accuracy": accuracy[:, flat].mean(), "macro_f1": macro_f1[:, flat].mean(), "majority": majority,
            "control_accuracy": control[:, flat].mean(),
            "selectivity": (accuracy[:, flat] - control[:, flat]).mean(),
            "random_init_accuracy": random_init[:, flat].mean(), "n_train": len(train_labels),
            "n_test": len(test_labels),
            "seed_std": accuracy[:, flat].std(ddof=1) if accuracy.shape[0] > 1 else 0.0,
        })
    return rows
