"""`codebert-heads attention`: the attention study (`attention.study`), joined with the study's ablation and probes
when there are some, run into its folder and logged."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from ablation.record import find_ablation
from attention.record import AttentionRecord
from attention.study import AttentionStudy
from codesearch.loading import load_data
from heads.models import encoder_for
from heads.settings import ModelConfig
from probing.record import find_probes
from tracking.run_logs import attention_log

from .config import as_sections
from .runs import Run, prepare_torch


def run_attention(cfg: DictConfig) -> Path:
    c = as_sections(cfg)
    a = c.attention
    prepare_torch(cfg)
    with Run(cfg, "attention", AttentionRecord, str(a.input)) as run:
        with run.timings.phase("setup_s"):
            ablation = find_ablation(run.home, a.ablation_run)     # a bad folder is named before any work
            probes = find_probes(run.home, a.probe_run)
            encoder = encoder_for(c.model, attn_implementation="eager")   # SDPA returns no attention weights
            second = encoder_for(ModelConfig(**{**vars(c.model), "name": a.compare_with}),
                                 attn_implementation="eager") if a.compare_with else None
            study = AttentionStudy(encoder, a, c.model, c.seed, second, c.progress, run.timings)
            data = load_data(c.data, c.corpus, c.seed, c.progress)
            study.prepare(data)
        study.run()
        study.analyse(ablation, probes)
        run.begin()
        files = study.export(run.work)
        record = run.finish(study.record(), files)
        print_summary(record, run.folder)
        run.log(attention_log(run.folder, study.heads, record, files, data, encoder))
    return run.folder


def print_summary(record: AttentionRecord, folder: Path) -> None:
    print(f"{record.model}: attention of {record.n_examples} examples ({record.input} input); joined with "
          f"{', '.join(record.joined) or 'no ablation or probes yet'}")
    for key, value in record.findings.items():
        print(f"  {key}: {value}")
    print(f"results: {folder}")
