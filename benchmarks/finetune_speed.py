"""Training throughput of `finetune`: pairs per second over a few dozen optimizer steps of the command's own path.

    python benchmarks/finetune_speed.py [--model builtin] [--precision 32] [--steps 30] [--batch-size 32]
    python benchmarks/finetune_speed.py --model codebert-size --precision bf16-mixed --accelerator gpu \\
        --peak-tflops 989

Each step is `ContrastiveRetriever.training_step` under a Lightning Trainer, as `finetune` runs it: the batch
tokenized, the encode loop with gradients and the recipe's pooling for queries and code, the in-batch loss, AdamW.
Synthetic pairs of random whole words fill the query and code lengths (128 and 256 tokens by default), so every step
carries a full batch of the longest inputs the recipe allows. `codebert-size` is a random-init BERT of CodeBERT's
shape (12 layers x 12 heads, hidden 768, a 50,265-word vocabulary, a pooler: CodeBERT's recipe) with a word-level
tokenizer built here; nothing is downloaded.

On CUDA it prints the share of the GPU's peak rate (`--peak-tflops`, dense, for the precision used) the steps
reach, with training FLOPs estimated as 6 x parameters x tokens (tokens of queries and code, padding included;
attention's own products left out), once with all parameters and once without the embedding tables (a lookup
multiplies nothing).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codesearch.records import Example, RetrievalTask  # noqa: E402
from heads.models import load_encoder  # noqa: E402
from heads.settings import EvalConfig, ModelConfig  # noqa: E402
from training.data import PairData, TrainPairs  # noqa: E402
from training.module import ContrastiveRetriever  # noqa: E402
from training.settings import FinetuneConfig  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def codebert_size(folder: Path) -> Path:
    """A random-init BERT of CodeBERT's shape with a word-level vocabulary of its size (word `w<i>` is one token)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(SPECIALS + [f"w{i}" for i in range(50265 - len(SPECIALS))]) + "\n")
    tokenizer = BertTokenizer.from_pretrained(folder)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=514)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def synthetic_pairs(encoder, n: int, query_words: int, code_words: int, seed: int = 0) -> TrainPairs:
    """n pairs of random whole words of the vocabulary (most are one token each)."""
    words = [w for w in encoder.tokenizer.get_vocab() if w.isalnum() and w.isascii()]
    rng = random.Random(seed)
    queries = [" ".join(rng.choices(words, k=query_words)) for _ in range(n)]
    codes = [" ".join(rng.choices(words, k=code_words)) for _ in range(n)]
    return TrainPairs(queries, codes, torch.arange(n).numpy())


class Clock(pl.Callback):
    """Wall time and tokens (padding included) from the end of the warm-up steps to the last step."""

    def __init__(self, warmup: int):
        self.warmup, self.tokens, self.pairs = warmup, 0, 0

    def on_train_start(self, trainer, _module):
        self.device = trainer.strategy.root_device

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_train_batch_start(self, trainer, _module, batch, batch_idx):
        if batch_idx == self.warmup:
            self._sync()
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, _module, _outputs, batch, batch_idx):
        if batch_idx >= self.warmup:
            n = len(batch.queries)
            self.tokens += n * (max(map(len, batch.queries)) + max(map(len, batch.codes)))
            self.pairs += n

    def on_train_end(self, trainer, _module):
        self._sync()
        self.seconds = time.perf_counter() - self.started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin", help="builtin, codebert-size (random init), or a model folder")
    parser.add_argument("--precision", default="32", help="32, bf16-mixed or 16-mixed")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per step")
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=5, help="steps run before the clock starts")
    parser.add_argument("--query-length", type=int, default=128)
    parser.add_argument("--code-length", type=int, default=256)
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="the GPU's dense peak for the precision used, e.g. 989 for an H100/H200 in bf16")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        name = str(codebert_size(Path(scratch) / "codebert-size")) if args.model == "codebert-size" else args.model
        encoder = load_encoder(name)
        sizes = ModelConfig(max_query_length=args.query_length, max_code_length=args.code_length)
    settings = FinetuneConfig(batch_size=args.batch_size, precision=args.precision, accelerator=args.accelerator,
                              epochs=1)
    total = args.warmup + args.steps
    pairs = synthetic_pairs(encoder, total * args.batch_size, args.query_length, args.code_length)
    valid = RetrievalTask("synthetic", "pairs", [Example("q", "q", "c", "python")], ["c"], ["c"], [0])
    module = ContrastiveRetriever(encoder, settings, sizes, EvalConfig(), valid, len(pairs))
    parameters = sum(p.numel() for p in encoder.model.parameters())
    embeddings = sum(p.numel() for p in encoder.model.embeddings.parameters())

    pl.seed_everything(0, verbose=False)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    clock = Clock(args.warmup)
    trainer = pl.Trainer(max_steps=total, accelerator=args.accelerator, devices=1, precision=args.precision,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[clock])
    device = trainer.strategy.root_device
    print(f"{encoder.info.name if args.model != 'codebert-size' else 'codebert-size (random init)'}: "
          f"{parameters / 1e6:.1f}M parameters ({embeddings / 1e6:.1f}M in embeddings), recipe "
          f"{encoder.recipe.pooling}; {device}, precision {args.precision}, torch threads {torch.get_num_threads()}; "
          f"batch {args.batch_size}, query {args.query_length} + code {args.code_length} tokens; {args.warmup} "
          f"warm-up + {args.steps} timed steps", flush=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(GPU available|TPU available|LeafSpec|logging interval).*")
        trainer.fit(module, datamodule=PairData(pairs, encoder, sizes, settings, seed=0))

    results = {"model": args.model, "parameters": parameters, "embedding_parameters": embeddings,
               "device": str(device), "precision": args.precision, "batch_size": args.batch_size,
               "steps": args.steps, "seconds": clock.seconds, "pairs_per_s": clock.pairs / clock.seconds,
               "tokens_per_s": clock.tokens / clock.seconds, "step_ms": 1000 * clock.seconds / args.steps,
               "threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    print(f"{results['pairs_per_s']:.1f} pairs/s, {results['tokens_per_s']:.0f} tokens/s, "
          f"{results['step_ms']:.1f} ms per step")
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)
        results["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        for key, count in (("all_parameters", parameters), ("non_embedding", parameters - embeddings)):
            tflops = 6 * count * clock.tokens / clock.seconds / 1e12
            results[f"tflops_{key}"] = tflops
            share = f", {100 * tflops / args.peak_tflops:.1f}% of the {args.peak_tflops:g} TFLOP/s peak" \
                if args.peak_tflops else " (give --peak-tflops for the share of the peak)"
            print(f"6 x {key.replace('_', ' ')} ({count / 1e6:.1f}M) x tokens: {tflops:.1f} TFLOP/s{share}")
        print(f"peak GPU memory {results['peak_memory_gb']:.1f} GB ({results['gpu']})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
