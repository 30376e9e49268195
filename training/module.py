"""The encoder being fine-tuned, as a LightningModule (the research code; the Trainer is set up by the command).

`FinetuneModule` is what every kind shares: the optimizer and schedule, the per-epoch history, the state that travels
in a checkpoint, validation (each kind's `val_mrr`, logged as `val/mrr`). `ContrastiveRetriever` is the bi-encoder:
one encoder embeds queries and code, through the project's own encode loop and pooling (`Encoder.forward_batches`
with gradients); the loss is `training.loss.in_batch_loss`; validation ranks the valid sample with the evaluation's
own code (`task_embeddings`, `rank_task`). The cross-encoder is `training.cross_module.PairClassifier`.
"""
from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from transformers import get_linear_schedule_with_warmup

from codesearch.records import RetrievalTask
from heads.encoder import Encoder
from heads.retrieval import rank_task, task_embeddings
from heads.settings import EvalConfig, ModelConfig

from .data import PairBatch
from .loss import in_batch_loss
from .settings import FinetuneConfig

EMBED_SLICE = 8   # inputs per forward within a training batch


class FinetuneModule(pl.LightningModule):
    """`encoder`'s model, trained on `n_examples` training examples per epoch, validated on `valid`.

    `history` holds one row per validation (epoch, step, train_loss, val_mrr, lr); it, the running loss of the
    epoch, the random state and `signature` (the settings that decide the result) travel in every checkpoint, so a
    resumed run continues exactly. A kind defines `training_loss(batch)` and `val_mrr()`.
    """

    def __init__(self, encoder: Encoder, settings: FinetuneConfig, model: ModelConfig, evaluation: EvalConfig,
                 valid: RetrievalTask, n_examples: int, signature: dict | None = None):
        super().__init__()
        self.encoder, self.settings, self.model_settings, self.evaluation = encoder, settings, model, evaluation
        self.transformer = encoder.model      # registered here: Lightning moves, trains and checkpoints it
        self.transformer.train()              # loaded for inference; training wants its dropout
        self.valid, self.n_examples = valid, n_examples
        self.signature = signature or {}
        self.scale = 1.0
        self.history: list[dict] = []
        self._loss_sum, self._loss_count = 0.0, 0
        self.resumed_from_step = 0

    def training_loss(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def val_mrr(self) -> float:
        """The valid sample's MRR in the primary protocol, with the weights as they are now."""
        raise NotImplementedError

    def training_step(self, batch, _index: int) -> torch.Tensor:
        loss = self.training_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.size)
        self._loss_sum = self._loss_sum + loss.detach()    # on the device: no wait for the GPU each step
        self._loss_count += 1
        return loss

    def validation_step(self, _batch, _index: int) -> None:
        self.encoder.device = self.device
        mrr = self.val_mrr()
        self.log("val/mrr", mrr, prog_bar=True, batch_size=1)
        if not self.trainer.sanity_checking:
            self.history.append({"epoch": self.current_epoch, "step": self.global_step,
                                 "train_loss": float(self._loss_sum) / max(self._loss_count, 1), "val_mrr": mrr,
                                 "lr": self.trainer.optimizers[0].param_groups[0]["lr"]})
            self._loss_sum, self._loss_count = 0.0, 0

    def configure_optimizers(self):
        decayed = [p for p in self.parameters() if p.ndim > 1]       # biases and LayerNorm weights are not decayed
        kept = [p for p in self.parameters() if p.ndim <= 1]
        optimizer = torch.optim.AdamW([{"params": decayed, "weight_decay": self.settings.weight_decay},
                                       {"params": kept, "weight_decay": 0.0}], lr=self.settings.lr)
        # Not `trainer.estimated_stepping_batches`: it sets the data up before a resumed run's state is handed back.
        batches = self.n_examples // self.settings.batch_size // self.trainer.world_size
        total = math.ceil(batches / self.settings.accumulate_grad_batches) * self.settings.epochs
        schedule = get_linear_schedule_with_warmup(optimizer, round(self.settings.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["finetune"] = {
            "signature": self.signature, "history": self.history, "loss_sum": float(self._loss_sum),
            "loss_count": self._loss_count, "rng": torch.get_rng_state(),   # dropout's: the resumed steps match
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["finetune"]
        self.resumed_from_step = int(checkpoint["global_step"])
        self.history, self._loss_sum, self._loss_count = state["history"], state["loss_sum"], state["loss_count"]
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def load_weights(self, checkpoint: str) -> None:
        """The transformer's weights as a checkpoint of this run holds them (the best epoch's, say)."""
        state = torch.load(checkpoint, map_location=self.device, weights_only=False)["state_dict"]   # our own file
        self.load_state_dict(state)


class ContrastiveRetriever(FinetuneModule):
    """A bi-encoder, trained so that each query scores its own code above the batch's other codes."""

    def __init__(self, encoder: Encoder, settings: FinetuneConfig, model: ModelConfig, evaluation: EvalConfig,
                 valid: RetrievalTask, n_examples: int, signature: dict | None = None):
        super().__init__(encoder, settings, model, evaluation, valid, n_examples, signature)
        # Cosine scores are sharpened by the temperature; dot products keep their own scale.
        self.scale = 1.0 / settings.temperature if encoder.recipe.normalize else 1.0

    def embed(self, token_ids: list[list[int]]) -> torch.Tensor:
        """[len(token_ids), hidden] pooled embeddings, with gradients, in the inputs' order.

        The batch runs through the encoder in length-sorted slices of EMBED_SLICE inputs, each padded to its own
        longest: padding every code to the batch's longest cost 2.4 times the real tokens on the built-in corpus.
        The slices change no term of the loss: it is computed over the whole batch's embeddings."""
        self.encoder.device = self.device     # where Lightning put the model: the encode loop sends batches there
        positions, pooled = [], []
        for batch, embeddings in self.encoder.forward_batches(token_ids, EMBED_SLICE, grad=True):
            positions += batch.positions
            pooled.append(embeddings)
        pooled = torch.cat(pooled)
        return pooled[torch.argsort(torch.as_tensor(positions, device=pooled.device))]

    def training_loss(self, batch: PairBatch) -> torch.Tensor:
        return in_batch_loss(self.embed(batch.queries), self.embed(batch.codes), batch.code_keys, self.scale,
                             self.settings.symmetric)

    def val_mrr(self) -> float:
        embeddings = task_embeddings(self.encoder, self.valid, self.model_settings, None, progress=False)
        return next(iter(rank_task(embeddings, self.valid, self.evaluation).values())).mrr   # the primary protocol
