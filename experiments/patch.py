"""`codebert-heads patch`: activation patching in a cross-encoder (`patching.study`), joined with the study's
ablation when there is one, run into its folder and logged."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from ablation.record import find_ablation
from codesearch.loading import load_data
from heads.models import encoder_for
from patching.record import PatchRecord
from patching.study import PatchStudy
from tracking.run_logs import patch_log

from .config import as_sections
from .runs import Run, prepare_torch


def run_patch(cfg: DictConfig) -> Path:
    c = as_sections(cfg)
    prepare_torch(cfg)
    with Run(cfg, "patch", PatchRecord, f"n{c.patch.examples}") as run:
        with run.timings.phase("setup_s"):
            ablation = find_ablation(run.home, c.patch.ablation_run)   # a bad folder is named before any work
            encoder = encoder_for(c.model)
            study = PatchStudy(encoder, c.patch, c.model, c.seed, c.progress, run.timings)
            data = load_data(c.data, c.corpus, c.seed, c.progress)
        study.prepare(data)
        study.run()
        study.analyse(ablation)
        run.begin()
        files = study.export(run.work)
        record = run.finish(study.record(), files)
        print_summary(record, run.folder)
        run.log(patch_log(run.folder, study.table, record, files, data, encoder))
    return run.folder


def print_summary(record: PatchRecord, folder: Path) -> None:
    f = record.findings
    print(f"{record.model}: {record.n_examples} examples patched (mean score clean {f['mean_clean_score']:.3f}, "
          f"corrupt {f['mean_corrupt_score']:.3f}); {f['n_significant_restored']} heads restore significantly, "
          f"{f['n_significant_destroyed']} destroy")
    print(f"  most restoring: {f['top_restored']}")
    print(f"  most destroying: {f['top_destroyed']}")
    for row in f.get("ablation_correlation", []):
        print(f"  {row['measure']} vs ablation -ΔMRR: Spearman rho {row['spearman_rho']:+.3f} (p {row['p_value']:.3g})")
    print(f"results: {folder}")
