"""A cross-encoder's training data, as CodeBERT built it (Feng et al. 2020, the `codesearch` scripts): every train
pair once as a positive (label 1) and once with another code of the split as a negative (label 0), 1:1.

The negatives are drawn once per run from the seed (CodeBERT wrote them into its training file): a uniformly random
other code of the split, or with `finetune.negatives_from` a hard negative, drawn uniformly from a bi-encoder's top
`finetune.hard_negatives_k` codes for the query (its gold and any identical code left out). Every text is tokenized
once; a batch is a set of (query, code) index pairs joined into pair inputs when it is trained on. The batches are
the bi-encoder's (`training.data.PairBatches`: a seeded shuffle per epoch, its position saved in every checkpoint),
over these examples.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from codesearch.errors import UserError
from codesearch.records import RetrievalTask
from heads.cross_encoder import CrossEncoder
from heads.encoder import Encoder
from heads.pairs import PairTexts, tokenize_pair_texts
from heads.settings import ModelConfig

from .data import PairBatches, PairData, check_epoch
from .settings import FinetuneConfig


class CrossBatch(NamedTuple):
    pairs: np.ndarray            # [batch, 2]: (query, code) indices into the examples' texts
    labels: torch.Tensor         # [batch]: 1 for a true pair, 0 for a negative
    epoch: int
    index: int

    @property
    def size(self) -> int:
        return len(self.pairs)

    def to(self, device) -> CrossBatch:
        return self._replace(labels=self.labels.to(device))


@dataclass
class CrossExamples:
    texts: PairTexts             # the split's queries and codes, tokenized once
    pairs: np.ndarray            # [2n, 2]: each positive, then each negative
    labels: np.ndarray           # [2n]
    negatives: str               # how the negatives were drawn, for the record

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def n_positives(self) -> int:
        return int(self.labels.sum())

    def check(self, settings: FinetuneConfig) -> None:
        check_epoch(len(self), settings, f"gives {len(self)} examples (pairs and their negatives)", "examples")

    @classmethod
    def of(cls, task: RetrievalTask, encoder: CrossEncoder, model: ModelConfig, settings: FinetuneConfig, seed: int,
           retriever: Encoder | None = None, progress: bool = True) -> CrossExamples:
        gold = np.asarray(task.gold, dtype=np.int64)
        keys = code_keys(task.candidates)
        if len(set(keys[gold].tolist())) < 2:
            raise UserError("the train split has fewer than two distinct codes: a negative needs another code")
        rng = np.random.default_rng([seed % 2**32, 1])
        if retriever is None:
            negative, how = random_negatives(gold, keys, rng), "random other code of the split (seeded, 1:1)"
        else:
            negative = hard_negatives(task, gold, keys, retriever, model, settings.hard_negatives_k, rng, progress)
            how = (f"drawn from the top {settings.hard_negatives_k} of {retriever.info.name} (seeded, 1:1, gold and "
                   f"identical code left out)")
        queries = np.arange(len(gold))
        pairs = np.concatenate([np.stack([queries, gold], 1), np.stack([queries, negative], 1)])
        labels = np.concatenate([np.ones(len(gold)), np.zeros(len(gold))]).astype(np.int64)
        texts = tokenize_pair_texts(encoder, task.queries, task.candidates, model.max_pair_length,
                                    model.max_query_length)
        return cls(texts, pairs, labels, how)


def code_keys(codes: list[str]) -> np.ndarray:
    """Equal for identical code texts: such a code is no negative of the other."""
    index: dict[str, int] = {}
    return np.array([index.setdefault(code, len(index)) for code in codes], dtype=np.int64)


def random_negatives(gold: np.ndarray, keys: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each query, a uniformly drawn code of the split whose text differs from its gold's."""
    pool = np.unique(gold)            # the codes of the split's pairs
    negative = pool[rng.integers(0, len(pool), len(gold))]
    while (clash := keys[negative] == keys[gold]).any():
        negative[clash] = pool[rng.integers(0, len(pool), int(clash.sum()))]
    return negative


def hard_negatives(task: RetrievalTask, gold: np.ndarray, keys: np.ndarray, retriever: Encoder, model: ModelConfig,
                   k: int, rng: np.random.Generator, progress: bool, block_rows: int = 1024) -> np.ndarray:
    """For each query, one of the retriever's top k codes of the split (ties by candidate order), its gold and any
    identical code left out."""
    from heads.retrieval import task_embeddings

    if k >= len(task.candidates):
        raise UserError(f"finetune.hard_negatives_k={k}: the train split has only {len(task.candidates)} codes")
    print(f"hard negatives: the top {k} of {retriever.info.name} over {len(task.candidates)} train codes",
          file=sys.stderr)
    embeddings = task_embeddings(retriever, task, model, None, progress)
    negative = np.empty(len(gold), dtype=np.int64)
    for start in range(0, len(gold), block_rows):
        scores = embeddings.queries[start:start + block_rows] @ embeddings.candidates.T
        rows = gold[start:start + block_rows]
        same = torch.as_tensor(keys[None, :] == keys[rows][:, None])
        scores = scores.masked_fill(same, float("-inf"))
        top = torch.argsort(-scores, dim=1, stable=True)[:, :k].numpy()
        negative[start:start + block_rows] = top[np.arange(len(rows)), rng.integers(0, k, len(rows))]
    return negative


class CrossBatches(PairBatches):
    """The examples in seeded batches, epoch after epoch (the bi-encoder's batching over positives and negatives)."""

    def batch(self, rows: np.ndarray, epoch: int = 0, index: int = 0) -> CrossBatch:
        return CrossBatch(self.pairs.pairs[rows], torch.from_numpy(self.pairs.labels[rows]), epoch, index)


class CrossPairData(PairData):
    batches_type = CrossBatches
    batch_type = CrossBatch
