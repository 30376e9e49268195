"""Linear probes for every head at once: one batched multinomial logistic regression, trained with
pytorch-lightning.

For features x [examples, heads, dim] (every head of the model, numbered flat) the module keeps weights
W [strengths, heads, dim, classes]: one independent probe per head and per candidate L2 strength, computed in one
einsum. The loss is each probe's
mean cross-entropy plus λ/2·||W||² (weights only, as scikit-learn penalises them; λ = 1/(C·n) for scikit-learn's C),
summed over the independent probes. Features are standardised with the training set's mean and deviation. The
strength is chosen per head on validation data; accuracy and macro-F1 are then measured on test data.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from .settings import ProbeConfig


@dataclass
class ProbeData:
    """Examples for a probe: `features(index)` gives float32 [len(index), heads, dim]; `labels` [n]."""
    features: Callable[[np.ndarray], np.ndarray]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "ProbeData":
        index = np.asarray(index)
        return ProbeData(lambda rows, base=self.features: base(index[rows]), self.labels[index])


def in_memory(features: np.ndarray, labels: np.ndarray) -> ProbeData:
    return ProbeData(lambda rows: np.asarray(features[rows], dtype=np.float32), np.asarray(labels))


class _Batches(Dataset):
    def __init__(self, data: ProbeData):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, rows):  # a whole batch of row indices at once
        rows = np.asarray(rows)
        return torch.from_numpy(self.data.features(rows)), torch.from_numpy(self.data.labels[rows].astype(np.int64))


def _loader(data: ProbeData, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(range(len(data)), generator=generator) if shuffle else SequentialSampler(range(len(data)))
    return DataLoader(_Batches(data), sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None)


def feature_moments(data: ProbeData, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation [heads, dim] over all examples, streamed."""
    total = total_sq = None
    for start in range(0, len(data), chunk):
        x = data.features(np.arange(start, min(start + chunk, len(data)))).astype(np.float64)
        total = x.sum(0) if total is None else total + x.sum(0)
        total_sq = (x ** 2).sum(0) if total_sq is None else total_sq + (x ** 2).sum(0)
    mean = total / len(data)
    std = np.sqrt(np.maximum(total_sq / len(data) - mean ** 2, 0.0))
    std[std < 1e-6] = 1.0  # a constant feature carries nothing; leave it at zero after centring
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


class BatchedLinearProbe(pl.LightningModule):
    """Logistic-regression probes for all heads and all L2 strengths in one module.

    Shapes: x [batch, heads, dim] -> logits [batch, strengths, heads, classes].
    """

    def __init__(self, total_heads: int, dim: int, n_classes: int, l2: tuple[float, ...], mean: torch.Tensor,
                 std: torch.Tensor, lr: float = 0.05, steps: int = 200):
        super().__init__()
        self.l2 = torch.tensor(l2, dtype=torch.float32)
        self.lr = lr
        self.steps = steps
        self.weight = torch.nn.Parameter(torch.zeros(len(l2), total_heads, dim, n_classes))
        self.bias = torch.nn.Parameter(torch.zeros(len(l2), total_heads, n_classes))
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return torch.einsum("nhd,rhdc->nrhc", x, self.weight) + self.bias

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[strengths, heads] mean cross-entropy of each probe on the batch."""
        logits = self(x)
        n, r, h, c = logits.shape
        ce = torch.nn.functional.cross_entropy(logits.reshape(n * r * h, c), y.repeat_interleave(r * h),
                                               reduction="none")
        return ce.view(n, r, h).mean(0)

    def training_step(self, batch, _index):
        x, y = batch
        penalty = 0.5 * self.l2.to(self.weight.device)[:, None] * self.weight.pow(2).sum(dim=(2, 3))
        return (self.losses(x, y) + penalty).sum()

    def configure_optimizers(self):
        # Adam, its rate annealed to zero over the run: the convex objective settles at its optimum.
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    @torch.no_grad()
    def confusion(self, data: ProbeData, n_classes: int, batch_size: int = 8192) -> torch.Tensor:
        """[strengths, heads, true class, predicted class] counts."""
        strengths, heads = self.weight.shape[:2]
        cells = n_classes * n_classes
        probe_offset = torch.arange(strengths * heads).view(1, strengths, heads) * cells
        counts = torch.zeros(strengths * heads * cells, dtype=torch.long)
        for x, y in _loader(data, batch_size, shuffle=False):
            predicted = self(x.to(self.device)).argmax(-1).cpu()                    # [n, r, h]
            cell = y[:, None, None] * n_classes + predicted + probe_offset          # [n, r, h]
            counts += torch.bincount(cell.flatten(), minlength=counts.numel())
        return counts.view(strengths, heads, n_classes, n_classes)


def accuracy_from(confusion: torch.Tensor) -> torch.Tensor:
    return confusion.diagonal(dim1=-2, dim2=-1).sum(-1).double() / confusion.sum(dim=(-2, -1)).clamp(min=1)


def macro_f1_from(confusion: torch.Tensor) -> torch.Tensor:
    """Macro-F1 over the classes present in the labels or the predictions, as scikit-learn's f1_score does."""
    tp = confusion.diagonal(dim1=-2, dim2=-1).double()
    support = confusion.sum(-1).double()       # true counts per class
    predicted = confusion.sum(-2).double()     # predicted counts per class
    present = (support + predicted) > 0
    denominator = (support + predicted).clamp(min=1)
    f1 = 2 * tp / denominator
    return (f1 * present).sum(-1) / present.sum(-1).clamp(min=1)


def train_probe(train: ProbeData, n_classes: int, seed: int, settings: ProbeConfig | None = None,
                progress: bool = False) -> BatchedLinearProbe:
    """The trained batched probe (eval mode): `settings.steps` minibatch updates of `settings.batch_size`, one
    probe per head and `settings.l2` strength, with pytorch-lightning."""
    settings = settings or ProbeConfig()
    pl.seed_everything(seed, workers=True, verbose=False)
    mean, std = feature_moments(train)
    total_heads, dim = mean.shape
    steps = settings.steps
    module = BatchedLinearProbe(total_heads, dim, n_classes, tuple(settings.l2), mean, std, settings.lr, steps)
    with warnings.catch_warnings():
        # Lightning's notes on data-loader workers and accelerators, and a deprecation inside Lightning itself.
        warnings.filterwarnings("ignore", message=".*(does not have many workers|num_workers|GPU available|TPU"
                                                  "|LeafSpec).*")
        logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
        trainer = pl.Trainer(max_steps=steps, max_epochs=-1, logger=False, enable_checkpointing=False,
                             enable_model_summary=False, enable_progress_bar=progress, accelerator="auto",
                             devices=1, deterministic=True)
        trainer.fit(module, _loader(train, settings.batch_size, shuffle=True, seed=seed))
    return module.eval()


@dataclass
class ProbeResult:
    accuracy: np.ndarray        # [heads], test, at the strength chosen on validation
    macro_f1: np.ndarray        # [heads]
    chosen_l2: np.ndarray       # [heads]
    valid_accuracy: np.ndarray  # [heads]


def fit_probe(train: ProbeData, valid: ProbeData, test: ProbeData, n_classes: int, seed: int,
              settings: ProbeConfig | None = None, progress: bool = False) -> ProbeResult:
    """Train one probe per head and strength, choose each head's strength on `valid`, measure on `test`.

    Training is counted in optimizer steps, not epochs, so that a small set (a few hundred functions) is trained
    as fully as a large one.
    """
    settings = settings or ProbeConfig()
    module = train_probe(train, n_classes, seed, settings, progress)
    heads = module.weight.shape[1]
    valid_accuracy = accuracy_from(module.confusion(valid, n_classes))      # [strengths, heads]
    chosen = valid_accuracy.argmax(0)                                        # [heads]
    test_confusion = module.confusion(test, n_classes)
    pick = chosen[None, :, None, None].expand(1, heads, n_classes, n_classes)  # each head's chosen strength
    chosen_confusion = test_confusion.gather(0, pick)[0]                     # [heads, C, C]
    return ProbeResult(
        accuracy=accuracy_from(chosen_confusion).numpy(), macro_f1=macro_f1_from(chosen_confusion).numpy(),
        chosen_l2=np.asarray(settings.l2)[chosen.numpy()], valid_accuracy=valid_accuracy.max(0).values.numpy(),
    )
