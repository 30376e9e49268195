"""The data of a fine-tuning run: the train, valid and test splits of the study's data, and the training batches.

Batches are drawn afresh each epoch by a seeded shuffle (full batches only: each query needs its negatives) and
tokenized as the evaluation tokenizes (`Encoder.tokenize`, the recipe's prefix included). Where the next batch starts
is state Lightning saves in every checkpoint, so a resumed run trains on exactly the batches an uninterrupted run
would have.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import pytorch_lightning as pl
import torch

from codesearch.errors import DataError, UserError
from codesearch.loading import LoadedData, load_data
from codesearch.records import RetrievalTask
from codesearch.settings import CorpusConfig, DataConfig
from heads.encoder import Encoder
from heads.settings import ModelConfig

from .settings import FinetuneConfig


@dataclass
class Splits:
    train: LoadedData     # every pair of the train split
    valid: LoadedData     # a seeded sample of `finetune.val_max_queries` queries, for each epoch's val/mrr
    test: LoadedData      # what `evaluate` reads with the same settings (`data.split`, `data.max_queries`)


def _pairs(task: RetrievalTask) -> set[tuple[str, str]]:
    return {(e.query, task.candidates[g]) for e, g in zip(task.examples, task.gold)}


def load_splits(data: DataConfig, corpus: CorpusConfig, settings: FinetuneConfig, seed: int,
                progress: bool = True) -> Splits:
    """The three splits, each checked: present, and held out from the train split."""
    if str(data.split) == "train":
        raise UserError("data.split=train: the fine-tuned model is tested on data.split, which must be held out "
                        "from training (test or valid)")
    loaded = {}
    for split in ("train", "valid", str(data.split)):
        try:
            loaded[split] = load_data(data.of_split(split, 0), corpus, seed, progress)
        except DataError as exc:
            raise UserError(f"finetune needs a {split} split in data.path={data.path}: {exc}") from None
    train = _pairs(loaded["train"].task)
    for split in ("valid", str(data.split)):
        held_out = _pairs(loaded[split].task)
        shared = len(held_out & train)
        if shared > len(held_out) / 2:  # a pairs file has no splits: every split reads all of it
            raise UserError(f"data.path={data.path}: {shared} of the {len(held_out)} {split} pairs are also train "
                            f"pairs, so the {split} split is no held-out data (a pairs file, or a folder without "
                            f"a {split}/ folder, reads as every split: put the pairs in train/, valid/ and test/ "
                            f"folders of one folder)")
    valid = loaded["valid"]
    test = loaded[str(data.split)]
    return Splits(train=loaded["train"], valid=replace(valid, task=valid.task.sample(settings.val_max_queries, seed)),
                  test=replace(test, task=test.task.sample(data.max_queries, seed)))


@dataclass
class TrainPairs:
    queries: list[str]
    codes: list[str]
    code_keys: np.ndarray     # [n] int, equal for identical code texts (no negatives of each other)

    @classmethod
    def of(cls, task: RetrievalTask) -> TrainPairs:
        codes = [task.candidates[g] for g in task.gold]
        index: dict[str, int] = {}
        keys = np.array([index.setdefault(code, len(index)) for code in codes], dtype=np.int64)
        return cls(task.queries, codes, keys)

    def __len__(self) -> int:
        return len(self.queries)

    def check(self, settings: FinetuneConfig) -> None:
        check_epoch(len(self), settings, f"has {len(self)} pairs", "pairs")


def check_epoch(n: int, settings: FinetuneConfig, count: str, unit: str) -> None:
    """Enough training examples (`n`, described as the train split `count`) for one batch, and enough batches of
    `unit` for one optimizer step."""
    if n < settings.batch_size:
        raise UserError(f"the train split {count}, fewer than one batch (finetune.batch_size={settings.batch_size})")
    batches = n // settings.batch_size
    if settings.accumulate_grad_batches > batches:
        raise UserError(f"finetune.accumulate_grad_batches={settings.accumulate_grad_batches}, but an epoch has "
                        f"only {batches} batches of {settings.batch_size} {unit}")


class PairBatch(NamedTuple):
    queries: list[list[int]]      # token ids of each pair's query
    codes: list[list[int]]        # and of its code
    code_keys: torch.Tensor       # [batch], equal for identical code texts
    epoch: int
    index: int                    # the batch's place in its epoch

    @property
    def size(self) -> int:
        return len(self.queries)

    def to(self, device) -> PairBatch:
        return self._replace(code_keys=self.code_keys.to(device))


class PairBatches:
    """The training batches, epoch after epoch: a stateful iterable, its state where the next batch starts.

    Under several devices, batch b of an epoch goes to device b % world (each device's batch has its own negatives).
    """

    def __init__(self, pairs: TrainPairs, encoder: Encoder, model: ModelConfig, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1):
        self.pairs, self.encoder, self.model = pairs, encoder, model
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.epoch, self.next = 0, 0

    def __len__(self) -> int:
        return len(self.pairs) // self.batch_size // self.world

    def __iter__(self):
        return self._batches(self.epoch, self.next)   # the state read now, not at the first batch

    def _batches(self, epoch: int, start: int):
        order = np.random.default_rng([self.seed % 2**32, epoch]).permutation(len(self.pairs))
        for index in range(start, len(self)):
            first = (index * self.world + self.rank) * self.batch_size
            yield self.batch(order[first:first + self.batch_size], epoch, index)

    def batch(self, rows: np.ndarray, epoch: int = 0, index: int = 0) -> PairBatch:
        return PairBatch(self.encoder.tokenize([self.pairs.queries[i] for i in rows], self.model.max_query_length),
                         self.encoder.tokenize([self.pairs.codes[i] for i in rows], self.model.max_code_length),
                         torch.from_numpy(self.pairs.code_keys[rows]), epoch, index)

    def trained(self, batch: PairBatch) -> None:
        """`batch` is being trained on: a checkpoint written after its step resumes with the batch after it."""
        last = batch.index + 1 >= len(self)
        self.epoch, self.next = (batch.epoch + 1, 0) if last else (batch.epoch, batch.index + 1)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "next": self.next}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.next = int(state["epoch"]), int(state["next"])


class PairData(pl.LightningDataModule):
    """The train split's batches, and a one-step validation (the module ranks the whole valid sample at once).

    Where the batches stand travels in every checkpoint as this module's own state (Lightning hands a loader's own
    state back only to a run resumed mid-epoch), and goes to the batches it makes.
    """

    batches_type = PairBatches    # a cross-encoder's data has its own (`training.cross_data`)
    batch_type = PairBatch

    def __init__(self, pairs: TrainPairs, encoder: Encoder, model: ModelConfig, settings: FinetuneConfig, seed: int):
        super().__init__()
        pairs.check(settings)
        self.pairs, self.encoder, self.model, self.settings, self.seed = pairs, encoder, model, settings, seed
        self.batches: PairBatches | None = None
        self.resumed: dict | None = None

    def train_dataloader(self) -> PairBatches:
        self.batches = self.batches_type(self.pairs, self.encoder, self.model, self.settings.batch_size, self.seed,
                                   self.trainer.global_rank, self.trainer.world_size)
        if self.resumed is not None:
            self.batches.load_state_dict(self.resumed)
        return self.batches

    def state_dict(self) -> dict:
        return self.batches.state_dict() if self.batches is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self.resumed = state or None

    def val_dataloader(self) -> list[int]:
        return [0]

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        # Called as a batch is taken for its step, not when Lightning fetches it ahead: the state stays exact.
        if isinstance(batch, self.batch_type) and self.batches is not None:
            self.batches.trained(batch)
        return batch

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        # The token ids stay lists (the encode loop pads and moves them): Lightning would walk every id.
        if isinstance(batch, self.batch_type):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)
