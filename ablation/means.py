"""Mean masking's data: each head's mean output over the real tokens of a held-out split, per side."""
from __future__ import annotations

import torch

from codesearch.errors import UserError
from codesearch.loading import load_data
from codesearch.records import RetrievalTask
from codesearch.settings import CorpusConfig, DataConfig
from heads.encoder import Encoder
from heads.hooks import MeanAccumulator
from heads.settings import ModelConfig

from .settings import AblationConfig


def head_means(encoder: Encoder, texts: list[str], max_length: int, batch_size: int) -> dict[int, torch.Tensor]:
    """Each head's mean output over the real tokens of `texts` (padding excluded): {layer: [heads, head_dim]}."""
    if not texts:
        raise UserError("the mean-masking set is empty: no texts to average head outputs over")
    accumulator = MeanAccumulator()
    for _ in encoder.forward_batches(encoder.tokenize(texts, max_length), batch_size, hook=accumulator):
        pass
    return accumulator.means()


def held_out_task(evaluated: RetrievalTask, data: DataConfig, corpus: CorpusConfig, ablation: AblationConfig,
                  seed: int, progress: bool) -> RetrievalTask:
    """`ablation.mean_samples` functions of the held-out split `ablation.mean_split`, checked to share no query with
    the evaluated task."""
    split = str(ablation.mean_split)
    if split == str(data.split):
        raise UserError(f"ablation.mean_split={split} is the evaluated split: the mean must come "
                        f"from held-out data (e.g. ablation.mean_split=valid)")
    task = load_data(data.of_split(split, ablation.mean_samples), corpus, seed, progress).task
    if set(task.query_ids) & set(evaluated.query_ids):
        raise UserError(f"ablation.mean_split={split} gives no held-out data: it shares queries with the evaluated "
                        f"split (a pairs file has no splits); use a corpus with a {split} split")
    return task


def held_out_means(encoder: Encoder, evaluated: RetrievalTask, data: DataConfig, corpus: CorpusConfig,
                   ablation: AblationConfig, model: ModelConfig, seed: int,
                   progress: bool) -> dict[str, dict[int, torch.Tensor]]:
    """{side: head means} from `ablation.mean_samples` functions of the held-out split `ablation.mean_split`:
    queries for the query side, their code for the code side."""
    task = held_out_task(evaluated, data, corpus, ablation, seed, progress)
    codes = [task.candidates[g] for g in task.gold]
    return {"query": head_means(encoder, task.queries, model.max_query_length, model.batch_size),
            "code": head_means(encoder, codes, model.max_code_length, model.batch_size)}
