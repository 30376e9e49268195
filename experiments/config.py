"""The configuration schema: one structured OmegaConf config for every command.

Precedence, lowest first: the dataclass defaults below; `experiments/configs/<command>.yaml` when it exists;
each `--config` file in the order given (a name under `experiments/configs/` or a path); `key=value`
overrides from the command line. Unknown keys and wrong types fail at once with OmegaConf's message naming
the key, before any data or model is loaded.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Optional, get_type_hints

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


class MaskMode(StrEnum):
    zero = "zero"
    mean = "mean"
    resample = "resample"


class Side(StrEnum):
    query = "query"
    code = "code"
    both = "both"


class Correction(StrEnum):
    holm = "holm"
    bh = "bh"


class PrimaryTest(StrEnum):
    t = "t"
    permutation = "permutation"


class WandbMode(StrEnum):
    auto = "auto"
    online = "online"
    offline = "offline"
    disabled = "disabled"


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
class AblationConfig:
    heads: str = _help("heads to ablate, as a spec: 3.5, 3.*, *.0, 3.5,4.1, * (all); names work too: L3H5", "*")
    layer: Optional[int] = _help("with ablation.head, one head by number (what a sweep grid varies); "
                                 "null = use ablation.heads", None)
    head: Optional[int] = _help("with ablation.layer, one head by number", None)
    per_head: bool = _help("true: each head of the spec is its own condition (the single-head map); false: the "
                           "whole spec is masked together as one condition", True)
    mode: MaskMode = _help("zero (the classic head mask), mean (the head's mean output over held-out tokens), "
                           "resample (its output on another input of the same batch)", MaskMode.zero)
    side: Side = _help("mask on the query side, the code side, or both (the head is gone from the model)", Side.both)
    mean_split: Split = _help("mean mode: the held-out split whose tokens give each head's mean", Split.valid)
    mean_samples: int = _help("mean mode: how many held-out functions (queries and code) to average over", 200)
    alpha: float = _help("significance level for p_adjusted", 0.05)
    correction: Correction = _help("multiple-comparison correction over all conditions: holm or bh "
                                   "(Benjamini-Hochberg)", Correction.holm)
    primary_test: PrimaryTest = _help("the test whose p-value is corrected: t (paired t-test) or permutation "
                                      "(paired sign-flip)", PrimaryTest.t)
    n_bootstrap: int = _help("paired bootstrap resamples for the ΔMRR confidence interval", 10000)
    n_permutations: int = _help("sign-flip permutations for p_perm", 10000)
    gradient: bool = _help("also estimate every head's importance from one backward pass (Michel et al. 2019)",
                           True)
    grad_temperature: float = _help("temperature of the contrastive retrieval loss the gradient is taken of", 0.05)
    top_k: int = _help("0: ablate every head of the spec exactly; k > 0: only the k heads with the largest "
                       "|grad_score| (needs ablation.gradient=true)", 0)
    max_cache_gb: float = _help("refuse to start if the layer cache would need more memory than this", 8.0)


@dataclass
class ProbeConfig:
    task: str = _help("probing task, a comma list, or all: token_category, in_loop, in_conditional, in_call, "
                      "in_return, has_loop, has_conditional, has_exception_handling, is_recursive, returns_value, "
                      "query_code_match (on the command line `task=` is short for `probe.task=`)", "all")
    seeds: int = _help("seeds per figure (each trains on its own random share of the training set)", 3)
    train_fraction: float = _help("share of the training set each seed trains on", 0.8)
    train_functions: int = _help("functions from the train split (seeded sample; 0 = all)", 800)
    eval_functions: int = _help("functions from each of the valid and test splits (0 = all)", 300)
    max_train_tokens: int = _help("token rows stored for training (seeded sample; 0 = all)", 30000)
    max_eval_tokens: int = _help("token rows stored for each of valid and test (0 = all)", 12000)
    l2: list[float] = _help("L2 strengths tried for every head; the best on valid is kept",
                            factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1])
    steps: int = _help("optimizer steps per probe (counted in steps, so small sets train fully)", 200)
    batch_size: int = _help("probe training batch size", 1024)
    lr: float = _help("Adam learning rate at the start, annealed to zero", 0.05)
    random_init_seed: int = _help("seed of the randomly initialised copy of the model", 0)
    ablation_run: str = _help("ablation or aggregate folder to join with; empty = the study's own", "")


@dataclass
class WandbConfig:
    mode: WandbMode = _help("auto ($WANDB_MODE if set, else online with credentials, else offline), online, "
                            "offline or disabled", WandbMode.auto)
    project: str = _help("W&B project", "codebert-heads")
    entity: str = _help("W&B entity (user or team); empty = your default", "")
    tags: list[str] = _help("extra tags for every run", factory=list)
    init_timeout: float = _help("seconds to wait for W&B to start a run before logging offline instead", 60.0)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    runs_dir: str = _help("where study folders go: <runs_dir>/<study>/<command>/...", "runs")
    output_dir: str = _help("this run's folder; empty = <runs_dir>/<study>/<command>[/<label>]", "")
    seed: int = _help("seed for sampling and anything random", 0)
    threads: int = _help("torch CPU threads; 0 = torch's default", 0)
    progress: bool = _help("show progress bars", True)
    resume: bool = _help("continue an interrupted study in output_dir from its first unfinished condition", False)


# Which sections each command reads (for --help and for the study key).
COMMAND_SECTIONS = {
    "corpus": ("data", "corpus"),
    "evaluate": ("data", "corpus", "model", "eval", "wandb"),
    "ablate": ("data", "corpus", "model", "eval", "ablation", "wandb"),
    "probe": ("data", "corpus", "model", "probe", "wandb"),
    "sweep": ("wandb",),
    "aggregate": ("ablation", "wandb"),
}
TOP_LEVEL = ("runs_dir", "output_dir", "seed", "threads", "progress", "resume")


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


def schema_type(key: str):
    """The declared type of a dotted key in the schema, or None for a key it does not have."""
    owner = Config
    parts = key.split(".")
    for depth, part in enumerate(parts):
        hints = get_type_hints(owner) if is_dataclass(owner) else {}
        if part not in hints:
            return None
        if depth == len(parts) - 1:
            return hints[part]
        owner = hints[part]
    return None


def normalize_overrides(overrides: list[str]) -> list[str]:
    """`key=value` items as OmegaConf's dotlist wants them.

    Accepts `--key=value` too, and turns the string `None` (what a W&B sweep sends for a null) into null.
    A value for a text field is quoted, so that YAML cannot turn `ablation.heads=3.10` into the number 3.1.
    """
    out = []
    for item in overrides:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise ConfigError(f"override {item!r} is not key=value (e.g. model.batch_size=16)")
        key, value = text.split("=", 1)
        if not key:
            raise ConfigError(f"override {item!r} has no key")
        if value == "None":
            value = "null"
        elif schema_type(key) is str and not (len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""):
            value = "'" + value.replace("'", "''") + "'"
        out.append(f"{key}={value}")
    return out


def _reject_numbers_in_text_fields(loaded, origin: str, prefix: str = "") -> None:
    """A YAML number where the schema wants text has lost its spelling (3.10 reads as 3.1): refuse it."""
    plain = OmegaConf.to_container(loaded, resolve=False) if isinstance(loaded, DictConfig) else loaded
    if not isinstance(plain, dict):
        return
    for key, value in plain.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            _reject_numbers_in_text_fields(value, origin, f"{full}.")
        elif isinstance(value, float) and schema_type(full) is str:
            raise ConfigError(f"{origin}: {full}: YAML reads this value as the number {value!r}; "
                              f"quote it to keep its spelling (e.g. {full.rsplit('.', 1)[-1]}: \"3.10\")")


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
        _reject_numbers_in_text_fields(loaded, origin)
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


def explicit_keys(config_files: list[str] | None = None, overrides: list[str] | None = None) -> set[str]:
    """The dotted keys a user set on purpose: in --config files or on the command line (not the presets)."""
    keys = {item.lstrip("-").split("=", 1)[0] for item in overrides or []}
    for name in config_files or []:
        keys |= _leaf_keys(OmegaConf.to_container(OmegaConf.load(_config_file(name)), resolve=False))
    return keys


def _leaf_keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in (tree or {}).items():
        if isinstance(value, dict):
            keys |= _leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


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
                       "threads": cfg.threads, "ablation.top_k": cfg.ablation.top_k}.items():
        if value < 0:
            raise ConfigError(f"{key}={value}: must be 0 or more")
    fractions = list(cfg.corpus.split_fractions)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ConfigError(f"corpus.split_fractions={fractions}: must be three non-negative numbers summing to 1")
    a = cfg.ablation
    if (a.layer is None) != (a.head is None):
        raise ConfigError("ablation.layer and ablation.head go together: give both (one head) or neither")
    if a.layer is not None and str(a.heads).strip() != "*":
        raise ConfigError(f"give either ablation.heads ({a.heads}) or ablation.layer/ablation.head, not both")
    if not str(a.heads).strip():
        raise ConfigError("ablation.heads is empty: give heads as layer.head, e.g. 3.5, 3.*, *.0 or 3.5,4.1")
    if not 0 < a.alpha < 1:
        raise ConfigError(f"ablation.alpha={a.alpha}: must be between 0 and 1")
    for key in ("mean_samples", "n_bootstrap", "n_permutations"):
        if a[key] < 1:
            raise ConfigError(f"ablation.{key}={a[key]}: must be at least 1")
    if a.grad_temperature <= 0:
        raise ConfigError(f"ablation.grad_temperature={a.grad_temperature}: must be positive")
    if a.top_k and not a.gradient:
        raise ConfigError("ablation.top_k needs ablation.gradient=true: the top heads are chosen by grad_score")
    if a.mode == "resample" and cfg.model.batch_size < 2:
        raise ConfigError("ablation.mode=resample needs model.batch_size >= 2: the donor is another input of the batch")
    pr = cfg.probe
    for key in ("seeds", "steps", "batch_size"):
        if pr[key] < 1:
            raise ConfigError(f"probe.{key}={pr[key]}: must be at least 1")
    if not 0 < pr.train_fraction <= 1:
        raise ConfigError(f"probe.train_fraction={pr.train_fraction}: must be in (0, 1]")
    if not pr.l2 or any(v < 0 for v in pr.l2):
        raise ConfigError(f"probe.l2={list(pr.l2)}: give one or more non-negative strengths")
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
