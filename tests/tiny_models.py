"""Tiny randomly initialised BERT and RoBERTa models with real tokenizers, saved to folders, built in code."""
from __future__ import annotations

import string
from pathlib import Path

import torch

BERT_VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
              + list(string.ascii_lowercase + string.digits + string.punctuation)
              + ["##" + c for c in string.ascii_lowercase + string.digits + string.punctuation])
ROBERTA_TRAINING_TEXT = [
    "def add(a, b): return a + b", "sum two numbers and return the result", "for item in items: total += item",
    "if value is None: raise ValueError('missing')", "read the file and parse lines", "class Parser: pass",
]


def make_tiny_bert(folder: Path, seed: int = 0, layers: int = 2, heads: int = 4, head_dim: int = 8,
                   words: tuple[str, ...] = (), pooler: bool = True) -> Path:
    """`words`: whole words added to the character vocabulary (each one token); `pooler`: save a pooler layer."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(BERT_VOCAB + list(words)) + "\n")
    tokenizer = BertTokenizer.from_pretrained(folder)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=heads * head_dim, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * heads * head_dim,
                        max_position_embeddings=300)
    torch.manual_seed(seed)
    BertModel(config, add_pooling_layer=pooler).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_roberta(folder: Path, seed: int = 0, layers: int = 2, heads: int = 4, head_dim: int = 8,
                      extra_special_tokens: tuple[str, ...] = ()) -> Path:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(ROBERTA_TRAINING_TEXT * 3, vocab_size=400, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>", *extra_special_tokens])
    bpe.save_model(str(folder))
    tokenizer = RobertaTokenizer.from_pretrained(folder)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=heads * head_dim, num_hidden_layers=layers,
                           num_attention_heads=heads, intermediate_size=4 * heads * head_dim,
                           max_position_embeddings=302, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                           type_vocab_size=1)
    torch.manual_seed(seed)
    RobertaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def plant_pair(model, layer: int, a: int, b: int, kind: str):
    """Weight surgery and hooks that make heads a and b of layer `layer` the only way information passes through
    that layer (its attention block drops the residual stream, every other head's output projection is zero), and
    plant their relation:
    - `redundant`: b becomes a copy of a (its query, key and value weights), and a head whose output is masked to zero
      gets its twin's output back: either alone can be masked without effect, not both;
    - `synergistic`: when either is masked to zero, both are: each alone costs as much as both.
    The projection's hook runs after the mask's pre-hook (it sees the masked input). Returns the hooks' handles."""
    import torch.nn.functional as F

    from heads.hooks import encoder_layers, output_projection

    config = model.config
    n_heads = config.num_attention_heads
    head_dim = config.hidden_size // n_heads
    block = encoder_layers(model)[layer].attention
    dense = output_projection(model, layer)

    def rows(head: int) -> slice:
        return slice(head * head_dim, (head + 1) * head_dim)

    with torch.no_grad():
        if kind == "redundant":
            for projection in (block.self.query, block.self.key, block.self.value):
                projection.weight[rows(b)] = projection.weight[rows(a)]
                projection.bias[rows(b)] = projection.bias[rows(a)]
        for head in range(n_heads):
            if head not in (a, b):
                dense.weight[:, rows(head)] = 0.0
        dense.bias.zero_()
    projected = {}

    def plant(module, args, _output):
        flat = args[0]
        z = flat.reshape(*flat.shape[:-1], n_heads, head_dim).clone()
        a_off, b_off = bool((z[..., a, :] == 0).all()), bool((z[..., b, :] == 0).all())
        if kind == "redundant":
            if a_off and not b_off:
                z[..., a, :] = z[..., b, :]
            elif b_off and not a_off:
                z[..., b, :] = z[..., a, :]
        elif a_off or b_off:
            z[..., a, :] = 0.0
            z[..., b, :] = 0.0
        projected["out"] = F.linear(z.reshape(flat.shape), module.weight, module.bias)
        return projected["out"]

    def without_residual(module, _args, _output):
        return module.LayerNorm(projected["out"])

    return [dense.register_forward_hook(plant), block.output.register_forward_hook(without_residual)]


def make_tiny_cross_encoder(folder: Path, family: str = "bert", seed: int = 0, labels: int = 2, layers: int = 2,
                            heads: int = 4, head_dim: int = 8, attention_gain: float = 1.0) -> Path:
    """A tiny randomly initialised sequence classifier (a cross-encoder), saved as `save_pretrained` saves one;
    `attention_gain` scales the heads' output projections (heads whose removal moves the scores well above float
    noise)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = folder.with_name(folder.name + "-base")
    if family == "bert":
        make_tiny_bert(base, seed=seed, layers=layers, heads=heads, head_dim=head_dim)
    else:
        make_tiny_roberta(base, seed=seed, layers=layers, heads=heads, head_dim=head_dim)
    torch.manual_seed(seed + 1)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=labels)
    with torch.no_grad():   # scores that differ between pairs by far more than float noise: ranks without near-ties
        for parameter in model.classifier.parameters():
            parameter.mul_(100.0)
        for layer in getattr(model, model.config.model_type).encoder.layer:
            layer.attention.output.dense.weight.mul_(attention_gain)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return folder
