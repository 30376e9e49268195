"""The configuration schema: one structured OmegaConf config for every command.

Precedence, lowest first: the dataclass defaults below; `experiments/configs/<command>.yaml` when it exists;
each `--config` file in the order given (a name under `experiments/configs/` or a path); `key=value`
overrides from the command line. Unknown keys and wrong types fail at once with OmegaConf's message naming
the key, before any data or model is loaded.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from codesearch.errors import UserError

CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(UserError):
    """A config file or override that does not fit the schema."""


# ---------------------------------------------------------------- closed choices

class Language(StrEnum):
    python = "python"
    go = "go"
    java = "java"
    javascript = "javascript"
    php = "php"
    ruby = "ruby"


class DataForm(StrEnum):
    auto = "auto"
    csn = "csn"
    hf = "hf"
    codexglue = "codexglue"
    pairs = "pairs"


class Split(StrEnum):
    train = "train"
    valid = "valid"
    test = "test"


class Pooling(StrEnum):
    auto = "auto"
    cls = "cls"
    mean = "mean"
    pooler = "pooler"


class Protocol(StrEnum):
    whole_pool = "whole_pool"
    csn = "csn"


def _help(text: str, default: Any = None, factory=None):
    if factory is not None:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


# ---------------------------------------------------------------- sections

@dataclass
class DataConfig:
    path: str = _help("where the corpus is: `builtin` (built from corpus.* settings, by default the Python "
                      "standard library, and cached) or a CodeSearchNet folder or file", "builtin")
    form: DataForm = _help("on-disk form: auto, csn (original release), hf (Hugging Face code_search_net), "
                           "codexglue (cleaned GraphCodeBERT set), pairs (jsonl/csv of query, code)", DataForm.auto)
    language: Language = _help("programming language to read (and to build the corpus in)", Language.python)
    split: Split = _help("split to evaluate", Split.test)
    max_queries: int = _help("evaluate a seeded random sample of this many queries; 0 = all", 0)


@dataclass
class CorpusConfig:
    source_dir: str = _help("folder of source files to build the corpus from; empty = the Python standard "
                            "library", "")
    name: str = _help("the corpus's `repo` name in its records; empty = derived from the source", "")
    exclude: list[str] = _help("glob patterns of paths (relative to source_dir) to leave out; empty = for the "
                               "standard library its tests and site-packages", factory=list)
    min_code_lines: int = _help("drop functions with fewer non-blank code lines (CodeSearchNet: 3)", 3)
    min_docstring_words: int = _help("drop functions whose summary has fewer words (CodeSearchNet: 3)", 3)
    dedup_threshold: float = _help("Jaccard similarity of code token sets at which a function is a "
                                   "near-duplicate", 0.8)
    split_fractions: list[float] = _help("train, valid, test fractions, drawn by file",
                                         factory=lambda: [0.7, 0.1, 0.2])
    output_dir: str = _help("`corpus` command: where to write the corpus; empty = the cache", "")


@dataclass
class ModelConfig:
    name: str = _help("`builtin` (all-MiniLM-L6-v2, shipped with the package), a local folder, or a hub name "
                      "(e.g. microsoft/unixcoder-base)", "builtin")
    pooling: Pooling = _help("auto (the model's own code-search recipe), cls, mean or pooler", Pooling.auto)
    normalize: Optional[bool] = _help("L2-normalise embeddings; null = as the model's recipe does", None)
    max_query_length: int = _help("tokens per query, special tokens included", 128)
    max_code_length: int = _help("tokens per code, special tokens included", 256)
    batch_size: int = _help("sequences per forward pass", 32)
    device: str = _help("cpu, cuda, cuda:N or auto", "cpu")


@dataclass
class EvalConfig:
    protocol: Protocol = _help("protocol of per_query.csv and of the paired statistics: whole_pool "
                               "(GraphCodeBERT/UniXcoder) or csn (batches of 1000)", Protocol.whole_pool)
    rank_cutoff: int = _help("whole_pool: reciprocal rank 0 beyond this rank, as GraphCodeBERT's script; "
                             "0 = no cut-off", 1000)
    csn_batch_size: int = _help("csn: queries per batch (1 gold + batch-1 distractors)", 1000)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = _help("run folder; empty = runs/<command>/<study>", "")
    seed: int = _help("seed for sampling and anything random", 0)
    threads: int = _help("torch CPU threads; 0 = torch's default", 0)
    progress: bool = _help("show progress bars", True)


# Which sections each command reads (for --help and for the study key).
COMMAND_SECTIONS = {
    "corpus": ("data", "corpus"),
    "evaluate": ("data", "corpus", "model", "eval"),
}
TOP_LEVEL = ("output_dir", "seed", "threads", "progress")


# ---------------------------------------------------------------- loading

def _config_file(name: str) -> Path:
    path = Path(name).expanduser()
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    available = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"config file {name!r} not found (neither a file nor one of experiments/configs: "
                      f"{', '.join(available)})")


def normalize_overrides(overrides: list[str]) -> list[str]:
    """`key=value` items as OmegaConf's dotlist wants them.

    Accepts `--key=value` too, and turns the string `None` (what a W&B sweep sends for a null) into null.
    """
    out = []
    for item in overrides:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise ConfigError(f"override {item!r} is not key=value (e.g. model.batch_size=16)")
        key, value = text.split("=", 1)
        if not key:
            raise ConfigError(f"override {item!r} has no key")
        out.append(f"{key}={'null' if value == 'None' else value}")
    return out


def load_config(command: str, config_files: list[str] | None = None, overrides: list[str] | None = None) -> DictConfig:
    """The merged, validated config of a command. Raises ConfigError naming the file or key at fault."""
    cfg = OmegaConf.structured(Config)
    layers: list[tuple[str, Any]] = []
    preset = CONFIG_DIR / f"{command}.yaml"
    if preset.is_file():
        layers.append((str(preset), preset))
    for name in config_files or []:
        path = _config_file(name)
        layers.append((str(path), path))
    for origin, path in layers:
        try:
            loaded = OmegaConf.load(path)
        except Exception as exc:  # yaml errors come in several types
            raise ConfigError(f"{origin}: cannot be read as YAML: {exc}") from None
        cfg = _merge(cfg, loaded, origin)
    if overrides:
        dotlist = normalize_overrides(overrides)
        try:
            from_cli = OmegaConf.from_dotlist(dotlist)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"command line: {exc}") from None
        cfg = _merge(cfg, from_cli, "command line")
    validate(cfg)
    return cfg


def _merge(cfg: DictConfig, other, origin: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, other)
    except OmegaConfBaseException as exc:
        message = str(exc).split("\n")
        detail = "; ".join(line.strip() for line in message if line.strip().startswith("full_key"))
        raise ConfigError(f"{origin}: {message[0]}" + (f" ({detail})" if detail else "")) from None


def validate(cfg: DictConfig) -> None:
    """Checks the types alone cannot make; each names its key."""
    positive = {"model.max_query_length": cfg.model.max_query_length,
                "model.max_code_length": cfg.model.max_code_length,
                "model.batch_size": cfg.model.batch_size, "eval.csn_batch_size": cfg.eval.csn_batch_size}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}={value}: must be at least 1")
    for key, value in {"data.max_queries": cfg.data.max_queries, "eval.rank_cutoff": cfg.eval.rank_cutoff,
                       "threads": cfg.threads}.items():
        if value < 0:
            raise ConfigError(f"{key}={value}: must be 0 or more")
    fractions = list(cfg.corpus.split_fractions)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ConfigError(f"corpus.split_fractions={fractions}: must be three non-negative numbers summing to 1")
    if not 0 < cfg.corpus.dedup_threshold <= 1:
        raise ConfigError(f"corpus.dedup_threshold={cfg.corpus.dedup_threshold}: must be in (0, 1]")


def to_plain(cfg: DictConfig) -> dict:
    """A plain dict (enums as strings), e.g. for wandb.init(config=...) and run.json."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def study_key(cfg: DictConfig, sections: tuple[str, ...]) -> str:
    """A short hash of the settings that decide a study's numbers."""
    plain = to_plain(cfg)
    payload = {name: plain[name] for name in sections if name in plain}
    payload["seed"] = plain["seed"]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]


# ---------------------------------------------------------------- help text

def describe_options(sections: tuple[str, ...]) -> str:
    """Every option of the given sections with its default and meaning, for --help."""
    section_types = {f.name: f.default_factory for f in fields(Config) if f.default_factory is not MISSING}
    groups = [(f"{name}.", section_types[name], None) for name in sections] + [("", Config, TOP_LEVEL)]
    lines = []
    for prefix, owner, only in groups:
        for f in fields(owner):
            if only is not None and f.name not in only:
                continue
            default = f.default if f.default is not MISSING else f.default_factory()
            lines.append(f"  {prefix}{f.name}={_show(default)}")
            if f.metadata.get("help"):
                lines.append(f"      {f.metadata['help']}")
    return "\n".join(lines)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)
