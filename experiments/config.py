"""Loading the config: the schema's defaults, preset and `--config` files, `key=value` overrides, and the checks
the types alone cannot make.

Precedence, lowest first: the schema's defaults (`experiments/schema.py`); `experiments/configs/<command>.yaml`
when it exists; each `--config` file in the order given (a name under `experiments/configs/` or a path);
`key=value` overrides from the command line. Unknown keys and wrong types fail at once with OmegaConf's message
naming the key, before any data or model is loaded.
"""
from __future__ import annotations

from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ablation.settings import parse_shard
from codesearch.errors import UserError
from heads.settings import check_device

from .schema import Config

CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(UserError):
    """A config file or override that does not fit the schema."""


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
                "model.batch_size": cfg.model.batch_size, "eval.csn_batch_size": cfg.eval.csn_batch_size,
                "model.max_pair_length": cfg.model.max_pair_length, "eval.rerank_k": cfg.eval.rerank_k}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}={value}: must be at least 1")
    for key, value in {"data.max_queries": cfg.data.max_queries, "eval.rank_cutoff": cfg.eval.rank_cutoff,
                       "threads": cfg.threads, "ablation.top_k": cfg.ablation.top_k}.items():
        if value < 0:
            raise ConfigError(f"{key}={value}: must be 0 or more")
    check_device(cfg.model.device)
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
    if a.top_k and a.gradient is False:
        raise ConfigError("ablation.top_k needs the gradient (ablation.gradient=true or null): the top heads are "
                          "chosen by grad_score")
    if a.max_memory_gb is not None and a.max_memory_gb <= 0:
        raise ConfigError(f"ablation.max_memory_gb={a.max_memory_gb}: must be positive (or null: what is available)")
    try:
        parse_shard(a.shard)
    except UserError as exc:
        raise ConfigError(str(exc)) from None
    if a.mode == "resample" and cfg.model.batch_size < 2:
        raise ConfigError("ablation.mode=resample needs model.batch_size >= 2: the donor is another input of the batch")
    check_prune(cfg.prune)
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


def check_prune(p) -> None:
    """The `prune` section: orders it can make, steps it can measure at."""
    orders = [str(order) for order in p.orders]
    if not orders and not p.layer_heads and not p.interactions:
        raise ConfigError("prune has nothing to measure: give prune.orders, prune.layer_heads=true or "
                          "prune.interactions=K")
    if len(set(orders)) < len(orders):
        raise ConfigError(f"prune.orders={orders}: an order is named twice")
    if "random" in orders and not p.seeds:
        raise ConfigError("prune.orders has random, but prune.seeds is empty: give the random orders' seeds, e.g. "
                          "prune.seeds=[0,1,2] (the control band needs at least one)")
    if any(seed < 0 for seed in p.seeds):
        raise ConfigError(f"prune.seeds={list(p.seeds)}: seeds are 0 or more")
    if len(set(p.seeds)) < len(p.seeds):
        raise ConfigError(f"prune.seeds={list(p.seeds)}: a seed is named twice")
    if p.steps is not None:
        steps = list(p.steps)
        if not steps:
            raise ConfigError("prune.steps=[]: give fractions of the heads to prune, e.g. [0.1,0.2,0.5], or null "
                              "(after every head)")
        outside = [f for f in steps if not 0 <= f <= 1]
        if outside:
            raise ConfigError(f"prune.steps={steps}: {outside[0]} is no fraction of the heads (each must be in [0, 1])")
        for before, after in zip(steps, steps[1:]):
            if after <= before:
                raise ConfigError(f"prune.steps={steps}: not increasing ({after} after {before}); list the fractions "
                                  f"in increasing order, each once")
    for key in ("interactions", "shapley_permutations"):
        if p[key] < 0:
            raise ConfigError(f"prune.{key}={p[key]}: must be 0 or more")
    if p.interactions == 1:
        raise ConfigError("prune.interactions=1: one head makes no pair; give K >= 2, or 0 for no interactions")
    if p.shapley_permutations and p.interactions < 2:
        raise ConfigError(f"prune.shapley_permutations={p.shapley_permutations} gives Shapley values of the top-K "
                          f"heads: it needs prune.interactions=K of at least 2 (now {p.interactions})")


def to_plain(cfg: DictConfig) -> dict:
    """A plain dict (enums as strings), e.g. for wandb.init(config=...) and run records."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def as_sections(cfg: DictConfig) -> Config:
    """The config as its typed sections, to hand on whole."""
    return OmegaConf.to_object(cfg)
