"""The full single-head ablation map, the cached way and the naive way, in one process.

    python benchmarks/ablation_speed.py [--queries 200] [--model builtin] [--device cpu]

Three ways to get every head's per-query ranks (zero mask, both sides, whole-pool protocol):
- cached: this tool's path (`ablation.engine.run_conditions`): layers below a head are never rerun, the
  head's own layer reuses its attention, inputs sorted by length.
- naive, same batches: the whole model per head with the mask hooked in, on the same length-sorted batches
  (`Encoder.encode` with the mask as its hook).
  This isolates what the layer cache saves; its ranks must be identical (its embeddings are bit-identical).
- naive, corpus order: the loop one writes without this tool: per head, re-tokenize and re-encode everything
  in the data's order, each batch padded to its longest input.

Prints wall times, the ratios, peak memory (resident set growth while each runs) and whether the ranks agree.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memory import PeakMemory, memory_mb  # noqa: E402

from ablation.conditions import build_conditions  # noqa: E402
from ablation.engine import run_conditions, side_inputs  # noqa: E402
from codesearch.builder import CorpusSettings, cached_corpus  # noqa: E402
from codesearch.metrics import whole_pool  # noqa: E402
from codesearch.readers import read_task  # noqa: E402
from heads.hooks import HeadMask, hook_z  # noqa: E402
from heads.models import load_encoder  # noqa: E402
from heads.settings import ModelConfig  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def corpus_order_embeddings(encoder, texts, max_length, batch_size, mask):
    """The naive loop: the data's order, tokenized afresh, each batch padded to its longest input."""
    out = []
    for start in range(0, len(texts), batch_size):
        batch = encoder.tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length,
                                  padding=True, return_tensors="pt").to(encoder.device)
        with hook_z(encoder.model, mask, batch["attention_mask"], layers=mask.layers):
            hidden = encoder.model(input_ids=batch["input_ids"],
                                   attention_mask=batch["attention_mask"]).last_hidden_state
        out.append(encoder.pool(hidden, batch["attention_mask"]).float().cpu())
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=200, help="queries (and pool size) from the built-in test split")
    parser.add_argument("--data", default="builtin", help="builtin, or a CodeSearchNet folder")
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--heads", default="*", help="head spec (default: every head)")
    parser.add_argument("--skip-corpus-order", action="store_true", help="leave out the corpus-order naive loop")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    encoder = load_encoder(args.model, device=args.device)
    path = cached_corpus(CorpusSettings(), progress=False)[0] if args.data == "builtin" else args.data
    task = read_task(path, split="test").sample(args.queries, seed=0)
    conditions = build_conditions(args.heads, True, encoder.n_layers, encoder.n_heads)
    gold = np.asarray(task.gold)
    sizes = ModelConfig(batch_size=args.batch_size)   # queries 128 tokens, code 256
    print(f"{encoder.info.name} ({encoder.n_layers}x{encoder.n_heads}) on {args.device}, torch threads "
          f"{torch.get_num_threads()}: {len(conditions)} heads, {len(task)} queries, {len(task.candidates)} "
          f"candidates, batch {args.batch_size}", flush=True)

    def ranks(q, c):
        return whole_pool(q, c, gold, rank_cutoff=0).ranks

    results = {}

    # This tool's path.
    cached_ranks = {}
    with PeakMemory(encoder.device) as memory:
        sync(encoder.device)
        started = time.perf_counter()
        run_conditions(encoder, side_inputs(encoder, task.queries, sizes.max_query_length, sizes.batch_size),
                       side_inputs(encoder, task.candidates, sizes.max_code_length, sizes.batch_size), conditions,
                       lambda cond, q, c: cached_ranks.__setitem__(cond.name, ranks(q, c)), progress=False)
        sync(encoder.device)
        seconds = time.perf_counter() - started
    results["cached"] = {"seconds": seconds, "peak_memory_mb": memory_mb(memory)}
    print(f"cached:                {results['cached']['seconds']:8.1f} s", flush=True)

    variants = [("naive_same_batches", lambda texts, length, mask: encoder.encode(
        texts, length, args.batch_size, hook=mask, progress=False))]
    if not args.skip_corpus_order:
        variants.append(("naive_corpus_order", lambda texts, length, mask: corpus_order_embeddings(
            encoder, texts, length, args.batch_size, mask)))
    for name, embed in variants:
        differing = 0
        with PeakMemory(encoder.device) as memory:
            sync(encoder.device)
            started = time.perf_counter()
            for condition in conditions:
                mask = HeadMask(condition.heads, "zero")
                q = embed(task.queries, sizes.max_query_length, mask)
                c = embed(task.candidates, sizes.max_code_length, mask)
                differing += int((ranks(q, c) != cached_ranks[condition.name]).sum())
            sync(encoder.device)
            seconds = time.perf_counter() - started
        results[name] = {"seconds": seconds, "peak_memory_mb": memory_mb(memory), "ranks_differing": differing,
                         "ratio_cached_over_this": results["cached"]["seconds"] / seconds}
        print(f"{name.replace('_', ' ') + ':':22} {seconds:8.1f} s   cached/this = "
              f"{results[name]['ratio_cached_over_this']:.3f}   ranks differing from cached: {differing} of "
              f"{len(conditions) * len(task)}", flush=True)

    print("peak memory growth (MB): " + ", ".join(f"{k} {v['peak_memory_mb']}" for k, v in results.items()))
    results["setup"] = {"model": encoder.info.name, "layers": encoder.n_layers, "heads": encoder.n_heads,
                        "queries": len(task), "candidates": len(task.candidates), "device": args.device,
                        "batch_size": args.batch_size, "threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if results["naive_same_batches"]["ranks_differing"]:
        sys.exit("the cached path's ranks differ from the naive path's on the same batches")


if __name__ == "__main__":
    main()
