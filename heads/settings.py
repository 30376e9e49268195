"""The instrument's settings: the `model` and `eval` sections of the config, and the closed choices of heads/
(light: no torch, so the command line checks a config before importing it)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Optional

from codesearch.errors import UserError
from codesearch.settings import Protocol, setting

BUILTIN = "builtin"
DEVICE = re.compile(r"cpu|auto|cuda(:\d+)?")


def check_device(name: str) -> None:
    """`model.device` is one this tool runs on: cpu, cuda, cuda:N or auto."""
    if not DEVICE.fullmatch(str(name)):
        raise UserError(f"model.device={name!r}: choose cpu, cuda, cuda:N or auto")


class Pooling(StrEnum):
    auto = "auto"
    cls = "cls"
    mean = "mean"
    pooler = "pooler"


class ModelKind(StrEnum):
    auto = "auto"                       # what the model folder is: a *ForSequenceClassification is a cross-encoder
    bi_encoder = "bi_encoder"           # query and code encoded apart, scored by their embeddings
    cross_encoder = "cross_encoder"     # one input holding both, scored by a classification head


class PairScore(StrEnum):
    auto = "auto"                       # the model folder's recipe, else positive_logit
    positive_logit = "positive_logit"   # the positive class's logit (CodeBERT's mrr.py ranks by it)
    log_odds = "log_odds"               # logit(positive) - logit(negative): the log-odds of a match


class MaskMode(StrEnum):
    zero = "zero"            # the classic head mask
    mean = "mean"            # the head's mean output over held-out tokens
    resample = "resample"    # the head's output on another input of the same batch


@dataclass
class ModelConfig:
    name: str = setting("`builtin` (all-MiniLM-L6-v2, shipped with the package), a local folder, or a hub name "
                        "(e.g. microsoft/unixcoder-base)", BUILTIN)
    pooling: Pooling = setting("auto (the model's own code-search recipe), cls, mean or pooler", Pooling.auto)
    normalize: Optional[bool] = setting("L2-normalise embeddings; null = as the model's recipe does", None)
    max_query_length: int = setting("tokens per query, special tokens included", 128)
    max_code_length: int = setting("tokens per code, special tokens included", 256)
    kind: ModelKind = setting("auto (as the model folder is: a sequence classifier is a cross-encoder), bi_encoder "
                              "or cross_encoder (finetune: a classification head is added to a bare encoder)",
                              ModelKind.auto)
    max_pair_length: int = setting("cross-encoder: tokens per (query, code) pair, special tokens included; the query "
                                   "is cut to model.max_query_length first, then the code (CodeBERT: 200)", 200)
    pair_score: PairScore = setting("cross-encoder with two labels: positive_logit (CodeBERT's) or log_odds; "
                                    "auto = the model's recipe, else positive_logit", PairScore.auto)
    batch_size: int = setting("sequences per forward pass", 32)
    device: str = setting("cpu, cuda, cuda:N or auto", "cpu")


@dataclass
class EvalConfig:
    protocol: Protocol = setting("protocol of per_query.csv and of the paired statistics: whole_pool "
                                 "(GraphCodeBERT/UniXcoder), csn (batches of 1000) or rerank (a cross-encoder "
                                 "re-scoring eval.retriever's top eval.rerank_k)", Protocol.whole_pool)
    rank_cutoff: int = setting("whole_pool: reciprocal rank 0 beyond this rank, as GraphCodeBERT's script; "
                               "0 = no cut-off", 1000)
    csn_batch_size: int = setting("csn: queries per batch (1 gold + batch-1 distractors)", 1000)
    retriever: str = setting("the first-stage bi-encoder (builtin, a folder or a hub name) a cross-encoder re-ranks "
                             "(rerank) and is reported beside; empty = none", "")
    rerank_k: int = setting("rerank: the retriever's top k candidates of the whole pool re-scored per query", 100)
