"""Probing tasks: their labels for a split of functions, and their control tasks.

Token tasks label subword tokens of the code; sequence tasks label whole functions; the matching task labels
(query, code) pairs: the true pair or a randomly drawn mismatched code. Control tasks (Hewitt & Liang, 2019):
for a token task, each token type (vocabulary item) gets a random label drawn from the task's label
distribution, fixed across splits, so a probe can only solve it by memorising types; for sequence and pair tasks,
which have no types, each example gets a random label from that distribution.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codesearch.errors import UserError
from codesearch.records import Example, mismatched_partners
from codesearch.syntax import CATEGORIES, IGNORE, SEQUENCE_TASKS, TOKEN_TASKS, syntax_leaves, token_labels
from heads.encoder import Encoder

YES_NO = ("no", "yes")
MATCH_TASK = "query_code_match"


@dataclass(frozen=True)
class ProbeTask:
    name: str
    level: str                  # token | sequence | pair
    classes: tuple[str, ...]
    column: int = 0             # column of the token or sequence label table


TASKS: dict[str, ProbeTask] = {
    **{name: ProbeTask(name, "token", CATEGORIES if name == "token_category" else YES_NO, i)
       for i, name in enumerate(TOKEN_TASKS)},
    **{name: ProbeTask(name, "sequence", YES_NO, i) for i, name in enumerate(SEQUENCE_TASKS)},
    MATCH_TASK: ProbeTask(MATCH_TASK, "pair", ("mismatch", "match")),
}


def resolve_tasks(spec: str) -> list[ProbeTask]:
    """`all`, one task name, or a comma-separated list; a clear error for an unknown name."""
    names = list(TASKS) if spec.strip() == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise UserError(f"unknown probing task {', '.join(unknown) or repr(spec)}: choose all or one of "
                        f"{', '.join(TASKS)}")
    return [TASKS[n] for n in names]


@dataclass
class LabelledSplit:
    """A split's functions with their token ids and labels."""
    name: str
    examples: list[Example]
    token_ids: list[list[int]]
    query_ids: list[list[int]]
    token_labels: list[np.ndarray]     # per function: [tokens, len(TOKEN_TASKS)], IGNORE where unlabelled
    sequence_labels: np.ndarray        # [functions, len(SEQUENCE_TASKS)]


def label_split(name: str, encoder: Encoder, examples: list[Example], max_code_length: int,
                max_query_length: int) -> LabelledSplit:
    code_ids, offsets = encoder.tokenize_with_offsets([e.code for e in examples], max_code_length)
    query_ids = encoder.tokenize([e.query for e in examples], max_query_length)
    per_token, per_sequence = [], []
    for example, spans in zip(examples, offsets):
        # Function-level labels describe what the model sees: the code up to its last kept token.
        seen = max((end for _, end in spans), default=0)
        leaves, sequence = syntax_leaves(example.code, example.language, visible_chars=seen)
        per_token.append(token_labels(leaves, spans, example.code))
        per_sequence.append([sequence[t] for t in SEQUENCE_TASKS])
    return LabelledSplit(name, examples, code_ids, query_ids, per_token,
                         np.asarray(per_sequence, dtype=np.int64).reshape(len(examples), len(SEQUENCE_TASKS)))


def kept_positions(split: LabelledSplit, max_tokens: int, seed: int) -> list[np.ndarray]:
    """Positions of labelled tokens to store per function: all, or a seeded sample of `max_tokens`."""
    labelled = [np.nonzero(labels[:, 0] != IGNORE)[0] for labels in split.token_labels]
    total = sum(len(p) for p in labelled)
    if max_tokens <= 0 or total <= max_tokens:
        return labelled
    rng = np.random.default_rng(seed)
    chosen = np.zeros(total, dtype=bool)
    chosen[rng.choice(total, size=max_tokens, replace=False)] = True
    out, start = [], 0
    for positions in labelled:
        out.append(positions[chosen[start:start + len(positions)]])
        start += len(positions)
    return out


def stored_token_labels(split: LabelledSplit, meta: np.ndarray, task: ProbeTask) -> tuple[np.ndarray, np.ndarray]:
    """(labels, token types) of the stored token rows `meta` [rows, (function, position)]."""
    labels = np.array([split.token_labels[f][p, task.column] for f, p in meta], dtype=np.int64)
    types = np.array([split.token_ids[f][p] for f, p in meta], dtype=np.int64)
    return labels, types


def check_classes(task: ProbeTask, labels_by_split: dict[str, np.ndarray]) -> None:
    """Every split must hold at least two classes, or the task says nothing."""
    for split, labels in labels_by_split.items():
        present = np.unique(labels[labels != IGNORE])
        if len(present) < 2:
            only = ", ".join(task.classes[i] for i in present) or "none"
            raise UserError(f"probing task {task.name} has one class only in the {split} split ({only}): "
                            f"nothing to probe; choose another task or a larger corpus")


def control_labels_by_type(train_labels: np.ndarray, types_by_split: dict[str, np.ndarray], n_classes: int,
                           seed: int) -> dict[str, np.ndarray]:
    """A random label per token type, shared by all splits, with the real task's class shares over tokens.

    Hewitt & Liang draw each type's label from the label distribution. Frequent types then decide the control
    task's class shares over tokens (one frequent type drawing the rare class can double it), and the control
    task gets another majority baseline than the real task, so that selectivity compares unlike things. Here types
    are taken in random order and given the classes in turn, each class until its share of training tokens is
    reached: every type still has one random label, and both tasks have the same class shares.
    """
    rng = np.random.default_rng(seed)
    target = np.bincount(train_labels, minlength=n_classes) / len(train_labels)
    train_types = types_by_split["train"]
    vocabulary, counts = np.unique(train_types, return_counts=True)
    order = rng.permutation(len(vocabulary))
    class_order = rng.permutation(n_classes)
    cumulative = np.cumsum(counts[order]) / counts.sum()
    boundaries = np.cumsum(target[class_order])
    # The class of a type: the first class whose cumulative share covers the middle of the type's token mass.
    middle = cumulative - counts[order] / counts.sum() / 2
    slot = np.minimum(np.searchsorted(boundaries, middle, side="right"), n_classes - 1)
    label_of = dict(zip(vocabulary[order].tolist(), class_order[slot].tolist()))
    unseen = np.setdiff1d(np.concatenate(list(types_by_split.values())), vocabulary)
    label_of.update(zip(unseen.tolist(), rng.choice(n_classes, size=len(unseen), p=target).tolist()))
    return {split: np.array([label_of[t] for t in types.tolist()], dtype=np.int64)
            for split, types in types_by_split.items()}


def control_labels_random(labels_by_split: dict[str, np.ndarray], train_labels: np.ndarray, n_classes: int,
                          seed: int) -> dict[str, np.ndarray]:
    """A random label per example, drawn from the train labels' distribution (tasks without token types)."""
    rng = np.random.default_rng(seed)
    distribution = np.bincount(train_labels, minlength=n_classes) / len(train_labels)
    return {split: rng.choice(n_classes, size=len(labels), p=distribution).astype(np.int64)
            for split, labels in labels_by_split.items()}


def pair_features(query_pooled: np.ndarray, code_pooled: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[2n, heads, 2*dim] features (q*c, |q-c|) and labels: each true pair, then a mismatched one."""
    partners = mismatched_partners(len(code_pooled), seed)
    q = np.asarray(query_pooled, dtype=np.float32)
    c = np.asarray(code_pooled, dtype=np.float32)
    c_wrong = c[partners]
    positive = np.concatenate([q * c, np.abs(q - c)], axis=-1)
    negative = np.concatenate([q * c_wrong, np.abs(q - c_wrong)], axis=-1)
    labels = np.concatenate([np.ones(len(q), dtype=np.int64), np.zeros(len(q), dtype=np.int64)])
    return np.concatenate([positive, negative]), labels
