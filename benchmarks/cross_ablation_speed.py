"""Single-head ablation of a cross-encoder, the cached way and the naive way, in one process.

    python benchmarks/cross_ablation_speed.py [--queries 40] [--batch 10] [--heads '*'] [--model builtin]

CodeBERT's protocol: each query against the codes of its batch of N (`--batch`), queries x N pairs in all. Two ways
to get every head's scores of every pair (zero mask, both segments):
- cached: this tool's path (`ablation.engine.run_pair_conditions`): layers below a head are computed once for all
  its heads, its own layer's attention once for the layer;
- naive: per head, every pair re-scored by the whole model with the mask hooked in, on the same length-sorted
  batches (`Encoder.forward_batches` with the mask as its hook), the loop one writes without this tool.
The ranks must agree. `--model builtin` is the built-in encoder with a seeded fresh two-label head (the speed does
not depend on the head's weights); give a fine-tuned cross-encoder's folder to time that instead.
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
from ablation.engine import run_pair_conditions  # noqa: E402
from codesearch.builder import CorpusSettings, cached_corpus  # noqa: E402
from codesearch.readers import read_task  # noqa: E402
from heads.hooks import HeadMask  # noqa: E402
from heads.models import load_encoder  # noqa: E402
from heads.pair_retrieval import csn_pairs, task_pair_inputs  # noqa: E402
from heads.settings import ModelConfig  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=40, help="queries from the built-in test split")
    parser.add_argument("--batch", type=int, default=10, help="CodeBERT's batch size N (candidates per query)")
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per forward")
    parser.add_argument("--max-pair-length", type=int, default=200)
    parser.add_argument("--heads", default="*", help="head spec (default: every head)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    torch.manual_seed(0)
    encoder = load_encoder(args.model, device=args.device, kind="cross_encoder", new_head=True)
    path = cached_corpus(CorpusSettings(), progress=False)[0]
    task = read_task(path, split="test").sample(args.queries, seed=0)
    pairs = csn_pairs(task, args.batch)
    sizes = ModelConfig(batch_size=args.batch_size, max_pair_length=args.max_pair_length)
    inputs = task_pair_inputs(encoder, task, pairs, sizes)
    conditions = build_conditions(args.heads, True, encoder.n_layers, encoder.n_heads)
    print(f"{encoder.info.name} cross-encoder ({encoder.n_layers}x{encoder.n_heads}) on {args.device}, torch threads "
          f"{torch.get_num_threads()}: {len(conditions)} heads, {len(pairs.query_index)} queries x {args.batch} "
          f"candidates = {pairs.n_pairs} pairs of at most {args.max_pair_length} tokens", flush=True)
    results = {}

    cached_ranks = {}
    with PeakMemory(encoder.device) as memory:
        sync(encoder.device)
        started = time.perf_counter()
        run_pair_conditions(encoder, inputs, conditions,
                            lambda c, scores: cached_ranks.__setitem__(c.name, pairs.ranks(scores).ranks),
                            progress=False)
        sync(encoder.device)
        seconds = time.perf_counter() - started
    results["cached"] = {"seconds": seconds, "peak_memory_mb": memory_mb(memory)}
    print(f"cached: {seconds:8.1f} s", flush=True)

    differing = 0
    with PeakMemory(encoder.device) as memory:
        sync(encoder.device)
        started = time.perf_counter()
        for condition in conditions:
            scores = torch.empty(inputs.n)
            for batch, pooled in encoder.forward_batches(None, 0, hook=HeadMask(condition.heads, "zero"),
                                                         batches=inputs.batches):
                scores[torch.as_tensor(batch.positions)] = pooled[:, 0].float().cpu()
            differing += int((pairs.ranks(scores).ranks != cached_ranks[condition.name]).sum())
        sync(encoder.device)
        seconds = time.perf_counter() - started
    ratio = results["cached"]["seconds"] / seconds
    results["naive"] = {"seconds": seconds, "peak_memory_mb": memory_mb(memory), "ranks_differing": differing,
                        "ratio_cached_over_naive": ratio}
    print(f"naive:  {seconds:8.1f} s   cached/naive = {ratio:.3f} ({1 / ratio:.2f}x faster)   ranks differing: "
          f"{differing} of {len(conditions) * len(pairs.query_index)}", flush=True)
    print("peak memory growth (MB): " + ", ".join(f"{k} {v['peak_memory_mb']}" for k, v in results.items()))
    results["setup"] = {"model": encoder.info.name, "layers": encoder.n_layers, "heads": encoder.n_heads,
                        "queries": int(len(pairs.query_index)), "candidates_per_query": args.batch,
                        "pairs": int(pairs.n_pairs), "max_pair_length": args.max_pair_length, "device": args.device,
                        "batch_size": args.batch_size, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                        "mean_pair_tokens": float(np.mean(inputs.lengths))}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if differing:
        sys.exit("the cached path's ranks differ from the naive path's on the same batches")


if __name__ == "__main__":
    main()
