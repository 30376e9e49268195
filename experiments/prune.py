"""`codebert-heads prune`: the head-set study (`ablation.prune_study`): pruning curves, one head per layer,
interactions of the top heads, run into its folder and logged."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from ablation.prune_study import PruneStudy
from ablation.record import PruneRecord
from codesearch.loading import load_data
from heads.models import encoder_for
from heads.naming import file_safe, head_set_name, is_every_head
from tracking.run_logs import prune_log

from .config import as_sections
from .runs import Run, prepare_torch, study_key


def prune_label(cfg: DictConfig) -> str:
    """The run's folder in its study: the heads pruned among, how they are masked, a hash of the settings that
    decide its numbers, and its shard."""
    a = as_sections(cfg).ablation
    heads = "all" if is_every_head(a.head_spec) else file_safe(head_set_name(a.head_spec))
    key = study_key(cfg, ("ablation", "prune"), leave_out=("ablation.max_memory_gb", "ablation.shard"))[:6]
    shard = f"-shard{a.shard_of[0]}of{a.shard_of[1]}" if a.shard_of else ""
    return f"{heads[:40]}-{a.mode}-{a.side}-{key}{shard}"


def run_prune(cfg: DictConfig) -> Path:
    c = as_sections(cfg)
    prepare_torch(cfg)
    with Run(cfg, "prune", PruneRecord, prune_label(cfg), resumable=("conditions",)) as run:
        with run.timings.phase("setup_s"):
            encoder = encoder_for(c.model)
            study = PruneStudy(encoder, c.ablation, c.prune, c.model, c.eval, c.seed, run.home, c.progress,
                               run.timings)
            data = load_data(c.data, c.corpus, c.seed, c.progress)
        study.prepare(data, c.data, c.corpus)
        run.begin(resume=c.resume)
        study.run(run.work, resume=c.resume, finished=run.folder)
        files = study.export(run.work)
        record = run.finish(study.record(), files)
        print_summary(record, run.folder)
        run.log(prune_log(run.folder, study.tables, record, data, encoder))
    return run.folder


def print_summary(record: PruneRecord, folder: Path) -> None:
    print(f"baseline MRR {record.baseline_mrr:.4f} ({record.protocol.protocol}, {record.protocol.n_queries} "
          f"queries); {record.n_sets} head sets over {record.n_heads} heads ({record.mode} mask, {record.side})")
    f = record.findings
    for order, fraction in f.get("fraction_keeping_95", {}).items():
        print(f"  {order:>12}: {fraction:.1%} of the heads pruned keeping 95% of the baseline MRR")
    if "best_head_per_layer_mrr" in f:
        print(f"  one head per layer (each layer's best): MRR {f['best_head_per_layer_mrr']:.4f}")
    if "redundant_pairs" in f:
        print(f"  pairs: {len(f['redundant_pairs'])} redundant, {len(f['synergistic_pairs'])} synergistic "
              f"({record.correction}, alpha {record.alpha})")
    if record.shard:
        print(f"  shard {record.shard}: `codebert-heads aggregate <study>` makes the tables from all shards")
    print(f"results: {folder}")
