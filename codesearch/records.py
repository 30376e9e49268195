"""A retrieval task: queries, a candidate pool, and which candidate answers each query."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace

import numpy as np

from .errors import UserError


@dataclass(frozen=True)
class Example:
    """One query with its code and what is known of where it came from."""
    id: str
    query: str
    code: str
    language: str
    path: str = ""
    func_name: str = ""
    url: str = ""
    repo: str = ""
    domain: str = ""
    split: str = ""


@dataclass
class RetrievalTask:
    """Queries, candidates and gold answers, in the order they were read.

    `gold[i]` is the index in `candidate_ids` of the candidate answering query i. `paired` is True when the
    pool is made of the queries' own codes (CodeSearchNet and plain pairs), False when it is a separate
    codebase (CodeXGLUE's cleaned set).
    """
    source: str
    form: str
    examples: list[Example]
    candidate_ids: list[str]
    candidates: list[str]
    gold: list[int]
    paired: bool = True
    notes: dict = field(default_factory=dict)

    @property
    def query_ids(self) -> list[str]:
        return [e.id for e in self.examples]

    @property
    def queries(self) -> list[str]:
        return [e.query for e in self.examples]

    def __len__(self) -> int:
        return len(self.examples)

    def sample(self, max_queries: int, seed: int) -> "RetrievalTask":
        """A seeded random subset of `max_queries` queries, kept in their original order.

        For a paired task the pool shrinks to the chosen queries' codes (each query's code is a distractor
        for the others, as in CodeSearchNet's test set); a separate codebase is kept whole.
        """
        if max_queries <= 0 or max_queries >= len(self.examples):
            return self
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(len(self.examples), size=max_queries, replace=False))
        examples = [self.examples[i] for i in chosen]
        gold = [self.gold[i] for i in chosen]
        if not self.paired:
            return replace(self, examples=examples, gold=gold)
        kept = sorted(set(gold))
        remap = {old: new for new, old in enumerate(kept)}
        return replace(
            self, examples=examples, gold=[remap[g] for g in gold],
            candidate_ids=[self.candidate_ids[i] for i in kept], candidates=[self.candidates[i] for i in kept],
        )

    def fingerprint(self) -> str:
        """A hash of exactly what is evaluated: queries, candidates and gold answers."""
        digest = hashlib.sha256()
        payload = {"queries": [[e.id, e.query] for e in self.examples],
                   "candidates": [list(p) for p in zip(self.candidate_ids, self.candidates)], "gold": self.gold}
        digest.update(json.dumps(payload, ensure_ascii=False).encode("utf-8"))
        return "sha256:" + digest.hexdigest()


def mismatched_partners(n: int, seed: int) -> np.ndarray:
    """For each of n examples, another one of them (a random derangement, seeded): a mismatched pair's partner."""
    rng = np.random.default_rng(seed)
    if n < 2:
        raise UserError("a mismatched partner needs at least two examples")
    shift = rng.integers(1, n, size=n)
    return (np.arange(n) + shift) % n
