"""`codebert-heads finetune`: an encoder fine-tuned as a retriever (a bi-encoder; with model.kind=cross_encoder, a
cross-encoder, its classification head initialised from the seed) on the study's train split
(`training`, the research side), with the Lightning Trainer set up here (the engineering side): checkpoints, early
stopping, precision, devices, the W&B logger. The result is a model folder in the run folder, `model/`, that every
command loads with `model.name=<folder>`.

Interrupted (Ctrl-C, kill), the run keeps its checkpoints in its work folder: the same command with resume=true
continues from the last one and ends where an uninterrupted run would have.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint

from codesearch.runfolder import flat
from heads.models import encoder_for
from tracking.run_logs import finetune_log
from tracking.wandb_log import start_run
from training.checkpoints import BEST, resume_point
from training.record import FinetuneRecord
from training.study import FinetuneStudy

from .config import as_sections, to_plain
from .runs import Run, prepare_torch, study_key

# What decides the fine-tuned weights: a resume must match it.
SIGNATURE_SECTIONS = ("data", "corpus", "model", "eval", "finetune", "seed")
# Lightning's notes that say nothing here (single-process loading, an idle GPU, a resumed checkpoint folder).
QUIET = (".*(does not have many workers|GPU available|TPU available|LeafSpec|exists and is not empty|smaller than "
         "the logging interval).*")


def finetune_label(cfg: DictConfig) -> str:
    f = as_sections(cfg).finetune
    return f"lr{f.lr:g}-b{f.batch_size}-e{f.epochs}-{study_key(cfg, ('finetune',))[:6]}"


def run_finetune(cfg: DictConfig, callbacks: tuple[Callback, ...] = ()) -> Path:
    """`callbacks`: more Lightning callbacks for the Trainer (tests interrupt a run with one)."""
    c = as_sections(cfg)
    c.finetune.check()
    prepare_torch(cfg)
    plain = to_plain(cfg)
    with Run(cfg, "finetune", FinetuneRecord, finetune_label(cfg), resumable=("checkpoints",)) as run:
        with run.timings.phase("setup_s"):
            torch.manual_seed(c.seed)   # a cross-encoder's fresh head
            encoder = encoder_for(c.model, new_head=True)
            study = FinetuneStudy(encoder, c.finetune, c.model, c.eval, c.seed, c.progress,
                                  flat({key: plain[key] for key in SIGNATURE_SECTIONS}))
            study.prepare(c.data, c.corpus)
        run.begin(resume=c.resume)
        checkpoints = run.work / "checkpoints"
        resume_from = resume_point(checkpoints, study.signature, c.resume)
        experiment = start_run(c.wandb, plain, run.study, run.home, "finetune", f"finetune-{run.folder.name}",
                               ["finetune"])
        try:
            with run.timings.phase("train_s"):
                trainer, best = train(c, study, checkpoints, experiment, callbacks, resume_from)
            with run.timings.phase("test_s"):
                study.test(best.best_model_path, run.work / "model")
            record = study.record(trainer.global_step)
            files = study.export(run.work, record)
            shutil.rmtree(checkpoints)   # resume points are no result; the model folder is
            record = run.finish(record, files)
            print_summary(record, run.folder)
            run.log(finetune_log(run.folder, record, study.history, study.splits.test, encoder, experiment))
        except BaseException:
            if experiment is not None:
                experiment.finish(exit_code=1)
            raise
    return run.folder


def make_trainer(c, folder: Path, experiment, n_pairs: int, extra: tuple[Callback, ...]):
    """The Trainer and the callback keeping the best epoch (by val/mrr). `last.ckpt`, the resume point, is written
    after every epoch and, when asked, every `checkpoint_every_n_steps` optimizer steps."""
    f = c.finetune
    best = ModelCheckpoint(dirpath=folder, filename=BEST, monitor="val/mrr", mode="max", save_top_k=1,
                           save_last=True, enable_version_counter=False)
    callbacks = [*extra, best]
    if f.checkpoint_every_n_steps:
        callbacks.append(ModelCheckpoint(dirpath=folder, save_top_k=0, save_last=True, enable_version_counter=False,
                                         every_n_train_steps=f.checkpoint_every_n_steps))
    if f.patience:
        callbacks.append(EarlyStopping(monitor="val/mrr", mode="max", patience=f.patience))
    logger = False
    if experiment is not None:
        from pytorch_lightning.loggers import WandbLogger

        logger = WandbLogger(experiment=experiment)
    trainer = pl.Trainer(
        max_epochs=f.epochs, accelerator=f.accelerator, devices=f.devices, strategy=f.strategy,
        precision=f.precision, accumulate_grad_batches=f.accumulate_grad_batches, deterministic=True,
        callbacks=callbacks, logger=logger, enable_progress_bar=c.progress, enable_model_summary=False,
        num_sanity_val_steps=0, log_every_n_steps=max(1, min(50, n_pairs // f.batch_size)),
        default_root_dir=str(folder))
    return trainer, best


def train(c, study: FinetuneStudy, folder: Path, experiment, callbacks: tuple[Callback, ...],
          checkpoint: str | None) -> tuple[pl.Trainer, ModelCheckpoint]:
    """The Trainer set up and fitted (from `checkpoint` when resuming). Ctrl-C is handed back to the command line:
    Lightning answers it (and a kill) with an exit after ignoring Ctrl-C for good; here it is a KeyboardInterrupt
    again (exit status 130, the work folder kept). The process's deterministic mode is left as it was."""
    handler, deterministic = signal.getsignal(signal.SIGINT), torch.are_deterministic_algorithms_enabled()
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)   # its banner of devices and tips
    pl.seed_everything(c.seed, workers=True, verbose=False)            # dropout's draws (a resume restores them)
    trainer = None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=QUIET)
            trainer, best = make_trainer(c, folder, experiment, len(study.data.pairs), callbacks)
            trainer.fit(study.module, datamodule=study.data, ckpt_path=checkpoint)
    except SystemExit:
        if trainer is not None and trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        torch.use_deterministic_algorithms(deterministic)
        with contextlib.suppress(ValueError):   # only the main thread may set it
            signal.signal(signal.SIGINT, handler)
    return trainer, best


def print_summary(record: FinetuneRecord, folder: Path) -> None:
    kind = record.kind.replace("_", "-")
    print(f"{record.base_model} fine-tuned as a {kind} on {record.n_train_pairs} pairs ({record.n_train_examples} "
          f"examples; negatives: {record.negatives}): {record.steps} steps, {record.epochs_run} epochs; best epoch "
          f"{record.best_epoch} (val MRR {record.best_val_mrr:.4f}, untrained start {record.start_val_mrr:.4f})")
    for protocol, summary in record.test.items():
        print(f"  test {protocol:>10}: MRR {summary.mrr:.4f}  R@1 {summary.recall_at_1:.3f}  "
              f"R@10 {summary.recall_at_10:.3f}  ({summary.n_queries} queries)")
    if record.retriever:
        summary = record.retriever["summary"]
        print(f"  beside it, the retriever {record.retriever['model']} on the same queries and candidates: MRR "
              f"{summary['mrr']:.4f}  R@1 {summary['recall_at_1']:.3f}  R@10 {summary['recall_at_10']:.3f}")
    print(f"results: {folder}")
    print(f"model: {folder / record.model_folder}  (use it as model.name={folder / record.model_folder})")
