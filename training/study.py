"""A fine-tuning run's research side: its data and module (trained by the command's Trainer), then the best
epoch's weights saved as a model folder, tested as `evaluate` tests any model, and recorded.

    study = FinetuneStudy(encoder, c.finetune, c.model, c.eval, c.seed, c.progress, signature)
    study.prepare(c.data, c.corpus)          # the splits, checked; the batches; the LightningModule
    trainer.fit(study.module, datamodule=study.data)
    study.test(best_checkpoint, work / "model")
    record = study.record(trainer.global_step)
    files = study.export(work, record)
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from codesearch.errors import UserError
from codesearch.files import atomic_write_csv
from codesearch.settings import CorpusConfig, DataConfig
from heads.encoder import Encoder
from heads.evaluation import Evaluation
from heads.models import load_encoder
from heads.settings import EvalConfig, ModelConfig

from .data import PairData, Splits, TrainPairs, load_splits
from .model_folder import save_model_folder, write_card
from .module import ContrastiveRetriever, FinetuneModule
from .record import FinetuneRecord
from .settings import FinetuneConfig

HISTORY_COLUMNS = ["epoch", "step", "train_loss", "val_mrr", "lr"]


class FinetuneStudy:
    def __init__(self, encoder: Encoder, settings: FinetuneConfig, model: ModelConfig, evaluation: EvalConfig,
                 seed: int, progress: bool = True, signature: dict | None = None):
        self.encoder, self.settings, self.model, self.evaluation = encoder, settings, model, evaluation
        self.seed, self.progress, self.signature = seed, progress, signature or {}

    def prepare(self, data: DataConfig, corpus: CorpusConfig) -> None:
        """Every check of the data before any training step: the splits, one batch, one optimizer step; then the
        untrained start's val MRR."""
        self.data_settings = data
        self.splits: Splits = load_splits(data, corpus, self.settings, self.seed, self.progress)
        train, valid = self.splits.train.task, self.splits.valid.task
        if self.encoder.kind == "cross_encoder":
            from .cross_data import CrossExamples, CrossPairData
            from .cross_module import PairClassifier

            retriever = load_encoder(self.settings.negatives_from, device=self.model.device, kind="bi_encoder") \
                if self.settings.negatives_from else None
            examples = CrossExamples.of(train, self.encoder, self.model, self.settings, self.seed, retriever,
                                        self.progress)
            self.data = CrossPairData(examples, self.encoder, self.model, self.settings, self.seed)
            self.module: FinetuneModule = PairClassifier(self.encoder, self.settings, self.model, self.evaluation,
                                                         valid, len(examples), examples.texts, self.signature)
            self.n_positives, self.negatives = examples.n_positives, examples.negatives
        else:
            if self.settings.negatives_from:
                raise UserError(f"finetune.negatives_from={self.settings.negatives_from}: hard negatives are a "
                                f"cross-encoder's (model.kind=cross_encoder); a bi-encoder's negatives are the "
                                f"batch's other codes")
            self.data = PairData(TrainPairs.of(train), self.encoder, self.model, self.settings, self.seed)
            self.module = ContrastiveRetriever(self.encoder, self.settings, self.model, self.evaluation, valid,
                                               len(self.data.pairs), self.signature)
            self.n_positives, self.negatives = len(self.data.pairs), "the batch's other codes"
        self.module.eval()
        self.start_val_mrr = self.module.val_mrr()
        self.module.train()

    @property
    def history(self) -> pd.DataFrame:
        """One row per epoch: its last step, mean training loss, val/mrr and learning rate."""
        return pd.DataFrame(self.module.history, columns=HISTORY_COLUMNS)

    def test(self, best_checkpoint: str, folder: Path) -> None:
        """The best epoch's weights saved as a model folder, loaded back as every command loads a model, and
        evaluated on the test data exactly as `evaluate` would (same loader, batches and protocols)."""
        self.module.load_weights(best_checkpoint)
        save_model_folder(self.encoder, folder)
        self.tuned = load_encoder(str(folder), device=self.model.device)
        self.result = Evaluation.run(self.tuned, self.splits.test, self.model, self.evaluation, None, self.progress)

    def record(self, steps: int) -> FinetuneRecord:
        best = max(self.module.history, key=lambda row: row["val_mrr"])    # the first best, as the checkpoint's
        test, info = self.splits.test, self.encoder.info
        summaries = {protocol: result.summary() for protocol, result in self.result.results.items()}
        return FinetuneRecord(
            base_model=info.name, base_revision=info.revision, recipe=info.recipe, model_folder="model",
            model_revision=self.tuned.info.revision,
            data={"path": str(self.data_settings.path), "source": test.task.source, "form": test.task.form,
                  "language": str(self.data_settings.language), "split": str(self.data_settings.split)},
            corpus_hash=test.corpus_hash, n_train_pairs=self.n_positives, n_train_examples=len(self.data.pairs),
            kind=self.encoder.kind, negatives=self.negatives, start_val_mrr=self.start_val_mrr,
            retriever=self.result.retriever_summary(),
            n_valid_queries=len(self.splits.valid.task),
            hyperparameters={**vars(self.settings), "scale": self.module.scale,
                             "max_query_length": self.model.max_query_length,
                             "max_code_length": self.model.max_code_length,
                             "max_pair_length": self.model.max_pair_length},
            steps=steps, epochs_run=len(self.module.history), best_epoch=best["epoch"], best_val_mrr=best["val_mrr"],
            test_mrr=next(iter(summaries.values())).mrr, test=summaries, test_task_fingerprint=test.task.fingerprint(),
            resumed_from_step=self.module.resumed_from_step, seed=self.seed)

    def export(self, folder: Path, record: FinetuneRecord) -> list[str]:
        """The model card, metrics.csv (one row per epoch) and the test's per-query ranks (as `evaluate` writes
        them); the model folder is there already."""
        write_card(Path(folder) / record.model_folder, record)
        atomic_write_csv(Path(folder) / "metrics.csv", self.history)
        return [record.model_folder, "metrics.csv", *self.result.write(folder)]
