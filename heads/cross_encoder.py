"""A cross-encoder: a BERT- or RoBERTa-family sequence classifier that scores one (query, code) pair, as CodeBERT's own
code-search model does (Feng et al. 2020: `RobertaForSequenceClassification` on `<s> query </s></s> code </s>`, two
labels). Only in this shape does a query token attend to a code token.

It is an `Encoder` whose encode loop yields one score per input instead of an embedding: `pool` is the model's own
classification head on the last hidden states, so every hook, the layer cache and the progress bars work on it
unchanged. The score is the positive class's logit (CodeBERT's `mrr.py` ranks by it), or the log-odds
logit(1) - logit(0), or a one-label model's only logit.
"""
from __future__ import annotations

import torch

from codesearch.errors import UserError

from .encoder import Encoder
from .pairs import PairTemplate
from .settings import PairScore

SCORES = (str(PairScore.positive_logit), str(PairScore.log_odds))


class CrossEncoder(Encoder):
    kind = "cross_encoder"

    def __init__(self, model, tokenizer, recipe, info, device, score: str):
        super().__init__(model, tokenizer, recipe, info, device)
        labels = int(model.config.num_labels)
        if labels not in (1, 2):
            raise UserError(f"model {info.name!r} is a classifier with {labels} labels: a cross-encoder scores a pair "
                            f"with one label (its logit) or two (no match, match)")
        if labels == 2 and score not in SCORES:
            raise UserError(f"pair score {score!r}: choose one of {', '.join(SCORES)}")
        self.n_labels = labels
        self.score = score if labels == 2 else "logit"
        self.pair_template = PairTemplate.of(tokenizer)

    @property
    def output_dim(self) -> int:
        return 1

    @property
    def backbone(self):
        return self.model.base_model

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[batch, labels]: the classification head on the last hidden states, as the model's own forward applies it
        (BERT: pooler, dropout, linear; RoBERTa: its head on the first token)."""
        base = self.model.base_model
        pooler = getattr(base, "pooler", None)
        if pooler is not None:
            return self.model.classifier(self.model.dropout(pooler(hidden)))
        return self.model.classifier(hidden)

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """[batch, labels] -> [batch, 1] scores."""
        if self.n_labels == 1:
            return logits[:, :1]
        if self.score == str(PairScore.log_odds):
            return (logits[:, 1] - logits[:, 0])[:, None]
        return logits[:, 1:2]

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[batch, seq, hidden] -> [batch, 1]: each pair's score."""
        return self.score_logits(self.logits(hidden))

    def encode(self, texts, max_length, batch_size=32, hook=None, progress=True, desc="encoding"):
        raise UserError(f"{self.info.name} is a cross-encoder: it scores (query, code) pairs and embeds no text alone")
