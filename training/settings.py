"""The settings of a fine-tuning run: the `finetune` section of the config (light: no torch).

The defaults are GraphCodeBERT's and UniXcoder's code-search recipe: one encoder shared by queries and code,
in-batch negatives, AdamW at 2e-5 with linear warm-up and decay, batches of 32 pairs, 10 epochs.
"""
from __future__ import annotations

from dataclasses import dataclass

from codesearch.errors import UserError
from codesearch.settings import setting

PRECISIONS = ("32", "32-true", "bf16-mixed", "16-mixed")


@dataclass
class FinetuneConfig:
    epochs: int = setting("passes over the train split (early stopping may end sooner)", 10)
    batch_size: int = setting("pairs per batch: each query's negatives are the batch's other codes", 32)
    lr: float = setting("AdamW learning rate (peak, after warm-up)", 2e-5)
    weight_decay: float = setting("AdamW weight decay (biases and LayerNorm weights are not decayed)", 0.0)
    warmup_ratio: float = setting("share of the optimizer steps spent warming the rate up linearly from 0; it then "
                                  "decays linearly to 0", 0.1)
    temperature: float = setting("softmax temperature of the scores when the recipe L2-normalises (cosine); a "
                                 "dot-product recipe uses the raw scores", 0.05)
    symmetric: bool = setting("add the code-to-query loss to the query-to-code loss (their mean)", False)
    val_max_queries: int = setting("validate each epoch on a seeded sample of this many queries of the valid "
                                   "split; 0 = all", 500)
    patience: int = setting("stop after this many epochs without a better val/mrr; 0 = never stop early", 0)
    checkpoint_every_n_steps: int = setting("also save the resume point every N optimizer steps (it is saved after "
                                            "every epoch anyway); 0 = at epoch ends only", 500)
    accumulate_grad_batches: int = setting("batches whose gradients are summed before each optimizer step (the "
                                           "negatives stay those of each batch)", 1)
    negatives_from: str = setting("cross-encoder: a bi-encoder (builtin, a folder, a hub name) whose top "
                                  "finetune.hard_negatives_k codes give each query's negative; empty = a seeded "
                                  "random other code of the split, as CodeBERT", "")
    hard_negatives_k: int = setting("cross-encoder with finetune.negatives_from: each negative is drawn from the "
                                    "retriever's top k codes (gold left out)", 10)
    precision: str = setting("32, bf16-mixed or 16-mixed (the mixed ones on a GPU)", "32")
    accelerator: str = setting("Lightning's accelerator: auto, cpu, gpu, ...", "auto")
    devices: str = setting("Lightning's devices: auto, a count (1) or a list (0,1)", "auto")
    strategy: str = setting("Lightning's strategy: auto, ddp, ...", "auto")

    def check(self) -> None:
        """What the types alone cannot say; each message names its setting."""
        if self.batch_size < 2:
            raise UserError(f"finetune.batch_size={self.batch_size}: in-batch negatives need at least 2 pairs per "
                            f"batch")
        for key in ("epochs", "accumulate_grad_batches", "hard_negatives_k"):
            if getattr(self, key) < 1:
                raise UserError(f"finetune.{key}={getattr(self, key)}: must be at least 1")
        for key in ("val_max_queries", "patience", "checkpoint_every_n_steps", "weight_decay"):
            if getattr(self, key) < 0:
                raise UserError(f"finetune.{key}={getattr(self, key)}: must be 0 or more")
        for key in ("lr", "temperature"):
            if getattr(self, key) <= 0:
                raise UserError(f"finetune.{key}={getattr(self, key)}: must be positive")
        if not 0 <= self.warmup_ratio < 1:
            raise UserError(f"finetune.warmup_ratio={self.warmup_ratio}: must be in [0, 1)")
        if str(self.precision) not in PRECISIONS:
            raise UserError(f"finetune.precision={self.precision!r}: choose one of {', '.join(PRECISIONS)}")
