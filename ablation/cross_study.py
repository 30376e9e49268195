"""An ablation study in a cross-encoder: the same study (`ablation.study`), with pairs where a bi-encoder has sides.

A cross-encoder scores each (query, candidate) pair its protocol ranks (`heads.pair_retrieval`): CodeBERT's batches
of N (`csn`) or a bi-encoder's top k re-scored (`rerank`). Every pair is one input `[CLS] q [SEP] c [SEP]`, so the
engine walks one side, the pairs, and a masked head's layer and everything below it are computed once for all
heads of that layer (`ablation.engine`). `ablation.side` says where in the pair the head's output is replaced: at
the query's tokens, at the code's, or at all of them (`both`: the head is gone from the model). Mean masking
replaces it with its mean over held-out pairs (each held-out query with its own code and with another, 1:1).

The gradient estimate is a bi-encoder's (a contrastive loss over embeddings); a cross-encoder's study measures every
head exactly and does not report it.
"""
from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import torch

from codesearch.errors import UserError
from codesearch.metrics import ProtocolResult
from codesearch.settings import CorpusConfig, DataConfig
from heads.cross_encoder import CrossEncoder
from heads.hooks import MeanAccumulator
from heads.models import retriever_for
from heads.pair_retrieval import (PairSet, check_cross_protocol, pair_cache_path, pair_scores, pair_set,
                                  task_pair_inputs)
from heads.pairs import pair_inputs

from .engine import PAIR, run_pair_conditions
from .means import held_out_task
from .study import AblationStudy


class CrossAblationStudy(AblationStudy):
    """`AblationStudy` for a cross-encoder; `pairs` is the scored pair set, `embeddings` holds the baseline's scores."""

    def __init__(self, encoder: CrossEncoder, ablation, model, evaluation, seed, cache_dir, progress=True,
                 timings=None):
        if ablation.gradient or ablation.top_k:
            key = "ablation.top_k" if ablation.top_k else "ablation.gradient=true"
            raise UserError(f"{key} needs the gradient estimate, which is a bi-encoder's (a contrastive loss over "
                            f"embeddings); {encoder.info.name} is a cross-encoder, whose study measures every head "
                            f"exactly: leave ablation.gradient and ablation.top_k unset")
        check_cross_protocol(encoder, evaluation)
        if str(evaluation.protocol) == "whole_pool":
            raise UserError(f"eval.protocol=whole_pool would score every query with every candidate in a "
                            f"cross-encoder; its ablation ranks CodeBERT's batches (csn) or a retriever's top k "
                            f"(rerank)")
        super().__init__(encoder, replace(ablation, gradient=False), model, evaluation, seed, cache_dir, progress,
                         timings)
        self.pairs: PairSet | None = None

    def prepare(self, data, data_config: DataConfig, corpus_config: CorpusConfig) -> None:
        rerank = str(self.evaluation.protocol) == "rerank"   # only the re-ranking protocol needs the first stage
        retriever = retriever_for(self.evaluation.retriever, self.model) if rerank else None
        self.pairs = pair_set(data.task, self.evaluation, retriever=retriever, model=self.model,
                              cache_dir=self.cache_dir, progress=self.progress)
        print(f"pairs: {self.pairs.n_pairs} ({self.pairs.protocol}, {self.pairs.candidates_per_query} candidates "
              f"per query)", file=sys.stderr)
        super().prepare(data, data_config, corpus_config)

    def _side_inputs(self) -> dict:
        return {PAIR: task_pair_inputs(self.encoder, self.task, self.pairs, self.model)}

    def _held_out_means(self, data_config: DataConfig, corpus_config: CorpusConfig) -> dict:
        return {PAIR: held_out_pair_means(self.encoder, self.task, data_config, corpus_config, self.ablation,
                                          self.model, self.seed)}

    def _baseline_cached(self, precision: str) -> bool:
        return pair_cache_path(self.encoder, self.task, self.pairs, self.model, self.cache_dir, precision).is_file()

    def _gradient_cached(self, precision: str) -> bool:
        return True    # never computed

    def _baseline_outputs(self) -> torch.Tensor:
        scores = pair_scores(self.encoder, self.task, self.pairs, self.model, self.inputs[PAIR], self.cache_dir,
                             self.progress)
        return scores.to(self.encoder.device)

    def _ranks_of(self, outputs: torch.Tensor) -> ProtocolResult:
        return self.pairs.ranks(outputs)

    def _run_engine(self, conditions, on_outputs, layout, progress: bool) -> None:
        run_pair_conditions(self.encoder, self.inputs[PAIR], conditions, on_outputs, self.means, layout, progress)

    def signature(self) -> dict:
        signature = super().signature()
        signature["pairs"] = self.pairs.fingerprint()
        signature["model_settings"]["max_pair_length"] = self.model.max_pair_length
        signature["score"] = self.encoder.score
        if str(self.evaluation.protocol) == "rerank":
            signature["eval"]["retriever"] = self.evaluation.retriever
            signature["eval"]["rerank_k"] = self.evaluation.rerank_k
        return signature

    def record(self):
        record = super().record()
        record.data["n_pairs"] = self.pairs.n_pairs
        return record


def held_out_pair_means(encoder: CrossEncoder, evaluated, data: DataConfig, corpus: CorpusConfig, ablation, model,
                        seed: int) -> dict[int, torch.Tensor]:
    """Each head's mean output over the real tokens of `ablation.mean_samples` held-out queries, each paired with its
    own code and with another (a seeded derangement), as the pairs a cross-encoder ranks are mostly mismatched."""
    task = held_out_task(evaluated, data, corpus, ablation, seed, progress=False)
    if len(task) < 2:
        raise UserError(f"ablation.mean_split={ablation.mean_split} has {len(task)} function: the mean over pairs needs at least 2")
    gold = np.asarray(task.gold)
    order = np.random.default_rng(seed).permutation(len(task))
    other = np.empty(len(task), dtype=np.int64)
    other[order] = np.roll(order, -1)    # a derangement: query i meets the code of another
    queries = np.arange(len(task))
    pairs = np.concatenate([np.stack([queries, gold], 1), np.stack([queries, gold[other]], 1)])
    inputs = pair_inputs(encoder, task.queries, task.candidates, pairs, model.max_pair_length,
                         model.max_query_length, model.batch_size)
    accumulator = MeanAccumulator()
    for _ in encoder.forward_batches(None, 0, hook=accumulator, batches=inputs.batches):
        pass
    return accumulator.means()


def study_for(encoder, ablation, model, evaluation, seed, cache_dir, progress=True, timings=None) -> AblationStudy:
    """The ablation study for the encoder's kind: a bi-encoder's, or a cross-encoder's."""
    study = CrossAblationStudy if isinstance(encoder, CrossEncoder) else AblationStudy
    return study(encoder, ablation, model, evaluation, seed, cache_dir, progress, timings)
