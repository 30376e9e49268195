"""The record of a finished fine-tuning run (`finetune`'s run.json)."""
from __future__ import annotations

from dataclasses import dataclass, field

from codesearch.metrics import ProtocolSummary
from codesearch.runfolder import RunRecord


@dataclass(kw_only=True)
class FinetuneRecord(RunRecord):
    base_model: str
    base_revision: str
    recipe: dict                        # the pooling recipe trained with, saved in the model folder
    model_folder: str                   # the fine-tuned model, relative to the run folder (`model`)
    model_revision: str                 # a hash of its weights, as `heads.models` names a local folder's revision
    data: dict                          # data.path, the test file or folder read, form, language, the test split
    corpus_hash: str
    n_train_pairs: int
    n_valid_queries: int
    hyperparameters: dict               # the finetune section, and what follows from it (scale, steps, warm-up)
    steps: int                          # optimizer steps taken
    epochs_run: int
    best_epoch: int                     # 0-based, the epoch whose weights are saved
    best_val_mrr: float
    test_mrr: float                     # the primary protocol's, on data.split as `evaluate` reads it
    test: dict[str, ProtocolSummary] = field(default_factory=dict)
    test_task_fingerprint: str = ""
    resumed_from_step: int = 0          # 0 for a run that was never interrupted
    seed: int = 0
    kind: str = "bi_encoder"            # or cross_encoder
    n_train_examples: int = 0           # the examples an epoch trains on (a cross-encoder: pairs and negatives)
    negatives: str = ""                 # how the negatives are made
    start_val_mrr: float | None = None  # val MRR of the untrained start (a cross-encoder: its fresh head)
    retriever: dict = field(default_factory=dict)   # eval.retriever's ranks on the same test queries
