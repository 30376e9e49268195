"""`codebert-heads ablate`: the head-ablation study (`ablation.study`), run into its folder and logged."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from ablation.record import AblationRecord
from ablation.cross_study import study_for
from codesearch.loading import load_data
from heads.models import encoder_for
from heads.naming import file_safe, head_set_name, is_every_head
from tracking.run_logs import ablation_log, ablation_run_name

from .config import as_sections
from .runs import Run, prepare_torch, study_key


def ablation_label(cfg: DictConfig) -> str:
    """The run's folder in its study: what is ablated, how, where, a hash of the other settings that decide its
    numbers (not the memory budget, which only decides how the work is cut), and its shard."""
    a = as_sections(cfg).ablation
    heads = "all" if is_every_head(a.head_spec) else file_safe(head_set_name(a.head_spec))
    if not a.per_head:
        heads = "set-" + heads
    key = study_key(cfg, ("ablation",), leave_out=("ablation.max_memory_gb", "ablation.shard"))[:6]
    shard = f"-shard{a.shard_of[0]}of{a.shard_of[1]}" if a.shard_of else ""
    return f"{heads[:40]}-{a.mode}-{a.side}-{key}{shard}"


def run_ablate(cfg: DictConfig) -> Path:
    c = as_sections(cfg)
    prepare_torch(cfg)
    label = ablation_label(cfg)
    with Run(cfg, "ablate", AblationRecord, label, resumable=("conditions",)) as run:
        with run.timings.phase("setup_s"):
            encoder = encoder_for(c.model)
            study = study_for(encoder, c.ablation, c.model, c.eval, c.seed, run.home, c.progress, run.timings)
            data = load_data(c.data, c.corpus, c.seed, c.progress)
        study.prepare(data, c.data, c.corpus)
        run.begin(resume=c.resume)
        study.run(run.work, resume=c.resume, finished=run.folder)
        files = study.export(run.work)
        record = run.finish(study.record(), files)
        print_summary(study.frame, record, run.folder)
        mode, side = str(c.ablation.mode), str(c.ablation.side)
        run.log(ablation_log(run.folder, study.frame, record, ablation_run_name(study.conditions, label, mode, side),
                             [mode, side], data, encoder))
    return run.folder


def print_summary(frame: pd.DataFrame, record: AblationRecord, folder: Path) -> None:
    print(f"baseline MRR {record.baseline_mrr:.4f} ({record.protocol.protocol}, {record.protocol.n_queries} "
          f"queries); {record.n_conditions} conditions, {record.n_significant} significant "
          f"({record.correction}, alpha {record.alpha})")
    for _, row in frame.sort_values("delta_mrr").head(5).iterrows():
        print(f"  {row['condition']:>10}: ΔMRR {row['delta_mrr']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"
              f"  p_adj {row['p_adjusted']:.2g}{'  *' if row['significant'] else ''}")
    for agreement in record.gradient_vs_exact:
        if agreement["spearman_rho"] is not None:
            print(f"  gradient estimate vs exact ablation ({agreement['mode']}, {agreement['side']}): Spearman rho "
                  f"{agreement['spearman_rho']:.3f} over {agreement['n_heads']} heads")
    print(f"results: {folder}")
