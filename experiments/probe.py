"""`codebert-heads probe task=<name>`: the probing study (`probing.study`), joined with the study's head ablation
when there is one, run into its folder and logged."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from ablation.record import find_ablation
from heads.models import encoder_for
from probing.join import join_with_ablation
from probing.record import ProbeRecord
from probing.study import ProbingStudy
from probing.tasks import resolve_tasks
from tracking.run_logs import probe_log

from .config import as_sections
from .runs import Run, prepare_torch


def run_probe(cfg: DictConfig) -> Path:
    c = as_sections(cfg)
    prepare_torch(cfg)
    every_task = str(c.probe.task) == "all"
    tasks = resolve_tasks(str(c.probe.task))
    label = "all" if every_task else str(c.probe.task).replace(",", "+")
    with Run(cfg, "probe", ProbeRecord, label) as run:
        with run.timings.phase("setup_and_features_s"):
            ablation = find_ablation(run.home, c.probe.ablation_run)   # a bad folder is named before any work
            encoder = encoder_for(c.model)
            study = ProbingStudy(encoder, c.probe, c.model, c.seed, run.home, c.progress)
            study.prepare(tasks, c.data, c.corpus, skip_one_class=every_task)
        with run.timings.phase("probes_s"):
            frame = study.run()
        run.begin()
        files = study.export(run.work)
        joined, join_files = join_with_ablation(frame, ablation, run.work)
        record = run.finish(study.record(joined), files + join_files)
        print_summary(frame, record, run.folder)
        run.log(probe_log(run.folder, frame, record, files, study.loaded["test"], encoder))
    return run.folder


def print_summary(frame: pd.DataFrame, record: ProbeRecord, folder: Path) -> None:
    for task, part in frame.groupby("task", sort=False):
        best = part.sort_values("selectivity", ascending=False).iloc[0]
        print(f"  {task:>24}: best {best['condition']} accuracy {best['accuracy']:.3f} (control "
              f"{best['control_accuracy']:.3f}, random-init {best['random_init_accuracy']:.3f}, majority "
              f"{best['majority']:.3f}); selectivity {best['selectivity']:+.3f}")
    for task, values in record.ablation_join.get("by_task", {}).items():
        if values["spearman_rho"] is not None:
            print(f"  {task:>24}: Spearman(selectivity, ΔMRR) {values['spearman_rho']:+.3f} "
                  f"over {values['n_heads']} heads")
    print(f"results: {folder}")
