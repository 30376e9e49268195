"""Attention statistics this tool's way against the original study's way, in one process, on the same model and pairs.

    python benchmarks/attention_speed.py [--examples 300] [--model builtin] [--max-length 320] [--repeats 3]

- this tool: `attention.capture.measure`: each layer's attention measured inside the forward pass, vectorised over
  the batch and the heads (and it also takes the value-weighted mass and the attention to nine code constructs).
- the original study's way: one forward per batch with `output_attentions=True`, then a Python loop over example x
  layer x head, each number taken with tensor indexing and `.item()`.
Prints both wall times (the fastest of --repeats interleaved runs each), the time of the statistics step alone (for
this tool: the whole minus a plain forward of the same batches, so it also counts the hooks and the value norms), the
ratios, peak memory, and the largest difference between the numbers both compute.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memory import PeakMemory, memory_mb  # noqa: E402

from attention.capture import measure  # noqa: E402
from attention.inputs import CODE, QUERY, tokenize_examples  # noqa: E402
from attention.settings import AttentionInput  # noqa: E402
from codesearch.builder import CorpusSettings, cached_corpus  # noqa: E402
from codesearch.readers import read_task  # noqa: E402
from heads.models import load_encoder  # noqa: E402

# The statistics the original study took (the tool's value-weighted mass and construct attention are extra).
ORIGINAL = ("q2c_mass", "c2q_mass", "q2q_mass", "c2c_mass", "q2c_max", "entropy", "sparsity", "cls_mass", "sep_mass")


def batches(encoder, inputs, batch_size):
    return encoder.length_sorted_batches(inputs.ids, batch_size, inputs.type_ids)


@torch.inference_mode()
def plain_forward(encoder, inputs, batch_size) -> float:
    """The same batches through the same eager model, nothing measured: what both ways pay before statistics."""
    started = time.perf_counter()
    for batch in batches(encoder, inputs, batch_size):
        encoder.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      token_type_ids=batch.token_type_ids)
    return time.perf_counter() - started


@torch.inference_mode()
def original_way(encoder, inputs, batch_size) -> tuple[dict[str, np.ndarray], float]:
    """Forward with every layer's attention returned, then a loop over example x layer x head."""
    n, layers, heads = len(inputs), encoder.n_layers, encoder.n_heads
    out = {name: np.full((n, layers, heads), np.nan) for name in ORIGINAL}
    statistics_seconds = 0.0
    for batch in batches(encoder, inputs, batch_size):
        attentions = encoder.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                   token_type_ids=batch.token_type_ids, output_attentions=True).attentions
        started = time.perf_counter()
        for row, example in enumerate(batch.positions):
            length = int(batch.attention_mask[row].sum())
            segments = torch.as_tensor(inputs.segments[example])
            q = torch.nonzero(segments == QUERY).flatten()
            c = torch.nonzero(segments == CODE).flatten()
            seps = torch.nonzero(torch.as_tensor(inputs.separators[example])).flatten()
            for layer in range(layers):
                for head in range(heads):
                    a = attentions[layer][row, head, :length, :length].double()
                    a = a / a.sum(-1, keepdim=True)
                    o = {name: values[example, layer] for name, values in out.items()}
                    o["q2c_mass"][head] = a[q][:, c].sum(1).mean().item()
                    o["c2q_mass"][head] = a[c][:, q].sum(1).mean().item()
                    o["q2q_mass"][head] = a[q][:, q].sum(1).mean().item()
                    o["c2c_mass"][head] = a[c][:, c].sum(1).mean().item()
                    o["q2c_max"][head] = a[q][:, c].max().item()
                    o["entropy"][head] = (-(a * torch.log(a.clamp(min=1e-300))).sum(1)).mean().item()
                    o["sparsity"][head] = (a < 0.01).double().mean().item()
                    o["cls_mass"][head] = a[:, 0].mean().item()
                    o["sep_mass"][head] = a[:, seps].sum(1).mean().item()
        statistics_seconds += time.perf_counter() - started
    return out, statistics_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=300, help="pairs from the built-in corpus's test split")
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--max-length", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way; the fastest of each is kept")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    encoder = load_encoder(args.model, attn_implementation="eager")
    task = read_task(cached_corpus(CorpusSettings(), progress=False)[0], split="test").sample(args.examples, seed=0)
    inputs = tokenize_examples(encoder, task.examples, AttentionInput.pair, args.max_length, 128, 256)
    tokens = sum(len(ids) for ids in inputs.ids)
    print(f"{encoder.info.name} ({encoder.n_layers}x{encoder.n_heads}), {len(inputs)} pairs, {tokens} tokens, "
          f"batch {args.batch_size}, torch threads {torch.get_num_threads()}", flush=True)

    # Each way runs --repeats times, interleaved, and keeps its fastest: a shared machine's noise only slows.
    forward = ours_seconds = loop_seconds = loop_statistics = float("inf")
    for _ in range(args.repeats):
        forward = min(forward, plain_forward(encoder, inputs, args.batch_size))
        with PeakMemory(encoder.device) as ours_memory:
            started = time.perf_counter()
            ours = measure(encoder, inputs, args.batch_size, QUERY, set(), progress=False)
            ours_seconds = min(ours_seconds, time.perf_counter() - started)
        with PeakMemory(encoder.device) as loop_memory:
            started = time.perf_counter()
            loop, statistics_seconds = original_way(encoder, inputs, args.batch_size)
            loop_seconds = min(loop_seconds, time.perf_counter() - started)
            loop_statistics = min(loop_statistics, statistics_seconds)
    ours_statistics = max(ours_seconds - forward, 1e-9)
    differences = {name: float(np.nanmax(np.abs(ours.values[name] - loop[name]))) for name in ORIGINAL}
    difference = max(differences.values())
    results = {
        "pairs": len(inputs), "tokens": tokens, "repeats": args.repeats, "plain_forward_seconds": forward,
        "tool_seconds": ours_seconds, "original_seconds": loop_seconds,
        "tool_statistics_seconds": ours_statistics, "original_statistics_seconds": loop_statistics,
        "statistics_speedup": loop_statistics / ours_statistics, "whole_ratio": ours_seconds / loop_seconds,
        "max_abs_difference": difference, "max_abs_difference_per_statistic": differences,
        "peak_memory_mb": {"tool": memory_mb(ours_memory), "original": memory_mb(loop_memory)},
    }
    print(f"plain forward of the same batches:  {forward:7.1f} s")
    print(f"this tool (measured in the pass):   {ours_seconds:7.1f} s   statistics {ours_statistics:6.2f} s")
    print(f"original study's loop:              {loop_seconds:7.1f} s   statistics {loop_statistics:6.2f} s")
    print(f"statistics: loop / tool = {results['statistics_speedup']:.0f}x; whole: tool / loop = "
          f"{results['whole_ratio']:.3f}; largest difference {difference:.2e}")
    print(f"peak memory growth (MB): tool {results['peak_memory_mb']['tool']}, "
          f"original {results['peak_memory_mb']['original']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if difference > 1e-6:
        sys.exit(f"the two ways disagree by more than 1e-6: {differences}")


if __name__ == "__main__":
    main()
