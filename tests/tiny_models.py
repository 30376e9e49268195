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
