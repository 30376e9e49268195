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
    batch_size: int = setting("sequences per forward pass", 32)
    device: str = setting("cpu, cuda, cuda:N or auto", "cpu")


@dataclass
class EvalConfig:
    protocol: Protocol = setting("protocol of per_query.csv and of the paired statistics: whole_pool "
                                 "(GraphCodeBERT/UniXcoder) or csn (batches of 1000)", Protocol.whole_pool)
    rank_cutoff: int = setting("whole_pool: reciprocal rank 0 beyond this rank, as GraphCodeBERT's script; "
                               "0 = no cut-off", 1000)
    csn_batch_size: int = setting("csn: queries per batch (1 gold + batch-1 distractors)", 1000)
