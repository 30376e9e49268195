"""The cross-encoder being fine-tuned, as a LightningModule: a sequence classifier on `[CLS] q [SEP] c [SEP]`, trained
on true pairs and their negatives (`training.cross_data`) as CodeBERT trained its code-search model: cross-entropy
over its two labels (a one-label model: binary cross-entropy on its logit).

Validation ranks the valid sample in CodeBERT's protocol (each query among the codes of its batch of
`eval.csn_batch_size`, `heads.pair_retrieval`), the pairs tokenized once, and logs the MRR as `val/mrr`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from codesearch.errors import UserError
from codesearch.records import RetrievalTask
from heads.cross_encoder import CrossEncoder
from heads.pair_retrieval import csn_pairs, pair_scores, task_pair_inputs
from heads.pairs import PairInputs, PairTexts
from heads.settings import EvalConfig, ModelConfig

from .cross_data import CrossBatch
from .module import EMBED_SLICE, FinetuneModule
from .settings import FinetuneConfig


class PairClassifier(FinetuneModule):
    def __init__(self, encoder: CrossEncoder, settings: FinetuneConfig, model: ModelConfig, evaluation: EvalConfig,
                 valid: RetrievalTask, n_examples: int, texts: PairTexts, signature: dict | None = None):
        super().__init__(encoder, settings, model, evaluation, valid, n_examples, signature)
        if evaluation.csn_batch_size > len(valid):
            raise UserError(f"eval.csn_batch_size={evaluation.csn_batch_size}: a cross-encoder is validated in "
                            f"CodeBERT's batches, and the valid sample has {len(valid)} queries "
                            f"(finetune.val_max_queries={settings.val_max_queries}); give eval.csn_batch_size <= "
                            f"{len(valid)} or more validation queries")
        self.texts = texts
        self.valid_pairs = csn_pairs(valid, evaluation.csn_batch_size)
        self.valid_inputs = task_pair_inputs(encoder, valid, self.valid_pairs, model)

    def logits(self, batch: CrossBatch) -> torch.Tensor:
        """[batch, labels] with gradients, in the batch's order (length-sorted slices of EMBED_SLICE pairs, each
        padded to its own longest)."""
        self.encoder.device = self.device
        inputs = PairInputs(self.encoder, self.texts, batch.pairs, EMBED_SLICE)
        positions, logits = [], []
        for part in inputs.batches:
            hidden = self.encoder.backbone(input_ids=part.input_ids, attention_mask=part.attention_mask,
                                           token_type_ids=part.token_type_ids).last_hidden_state
            positions += part.positions
            logits.append(self.encoder.logits(hidden))
        logits = torch.cat(logits)
        return logits[torch.argsort(torch.as_tensor(positions, device=logits.device))]

    def training_loss(self, batch: CrossBatch) -> torch.Tensor:
        logits = self.logits(batch).float()
        if logits.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(logits[:, 0], batch.labels.float())
        return F.cross_entropy(logits, batch.labels)

    def val_mrr(self) -> float:
        scores = pair_scores(self.encoder, self.valid, self.valid_pairs, self.model_settings, self.valid_inputs,
                             cache_dir=None, progress=False)
        return self.valid_pairs.ranks(scores).mrr
