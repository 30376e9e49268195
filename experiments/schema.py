"""The config schema: one structured OmegaConf config for every command, made of the sections the layers own.

Each section is the settings object of the layer that uses it (its light `settings` module), with its help text
and its closed choices (the layer's own StrEnums); commands hand each section on whole. Only the top-level keys are
defined here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ablation.settings import AblationConfig, PruneConfig
from attention.settings import AttentionConfig
from codesearch.settings import CorpusConfig, DataConfig, setting
from comparison.settings import CompareConfig
from heads.settings import EvalConfig, ModelConfig
from patching.settings import PatchConfig
from probing.settings import ProbeConfig
from tracking.settings import WandbConfig
from training.settings import FinetuneConfig


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    patch: PatchConfig = field(default_factory=PatchConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    runs_dir: str = setting("where study folders go: <runs_dir>/<study>/<command>/...", "runs")
    output_dir: str = setting("this run's folder; empty = <runs_dir>/<study>/<command>[/<label>]", "")
    seed: int = setting("seed for sampling and anything random", 0)
    threads: int = setting("torch CPU threads; 0 = torch's default", 0)
    progress: bool = setting("show progress bars", True)
    resume: bool = setting("continue an interrupted run in output_dir (ablate: from its first unfinished "
                           "condition; prune: from its first unmeasured head set; finetune: from its last "
                           "checkpoint)", False)


# Which sections each command reads (for --help and for the study key).
COMMAND_SECTIONS = {
    "corpus": ("data", "corpus"),
    "evaluate": ("data", "corpus", "model", "eval", "wandb"),
    "ablate": ("data", "corpus", "model", "eval", "ablation", "wandb"),
    "prune": ("data", "corpus", "model", "eval", "ablation", "prune", "wandb"),
    "probe": ("data", "corpus", "model", "probe", "wandb"),
    "attention": ("data", "corpus", "model", "attention", "wandb"),
    "patch": ("data", "corpus", "model", "patch", "wandb"),
    "finetune": ("data", "corpus", "model", "eval", "finetune", "wandb"),
    "sweep": ("wandb",),
    "aggregate": ("ablation", "wandb"),
    "compare": ("compare", "wandb"),
    "report": ("wandb",),
}
TOP_LEVEL = ("runs_dir", "output_dir", "seed", "threads", "progress", "resume")
# The settings that decide a study's baseline: every run of a study shares its queries, pool and model.
STUDY_SECTIONS = ("data", "corpus", "model", "eval")
