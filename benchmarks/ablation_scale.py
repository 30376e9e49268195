"""Head ablation at the benchmark's size: memory bounded by `ablation.max_memory_gb`, time against the naive loop,
and (on a GPU) a CodeBERT-size model on a CodeXGLUE-Python-sized task.

    python benchmarks/ablation_scale.py memory [--pools 1000,4000,16000,43827] [--plan-pools ...] [--max-memory-gb 2]
    python benchmarks/ablation_scale.py time [--pool 300]
    python benchmarks/ablation_scale.py gpu [--queries 14918 --candidates 43827] [--device cuda]
    python benchmarks/ablation_scale.py estimate [--device cpu]     # the plan and time of a whole map, not run

The pools are synthetic CodeXGLUE-form sets of real code: the built-in corpus's functions (every split), repeated
with a distinguishing token until the pool is full, with one query per 2.94 candidates as in CodeXGLUE's Python
test set (14,918 queries, 43,827 candidates).

- memory: `codebert-heads ablate` of 12 heads (the built-in model's last layer, `5.*`) in a fresh process per pool,
  at the given budget; prints what the unchunked layer cache would need (the cache every batch at once holds:
  3 x tokens x hidden x 4 bytes), the plan, and the measured peak resident set of the whole process (run.json).
  `--plan-pools` starts `ablate` on pools too large to run here and stops it after its plan (or its refusal).
- time: side by side in one process, on the same batches: the engine with every batch cached; in chunks of one
  batch with groups of 12 conditions (what the plan picks when the cache does not fit and 12 conditions' embeddings
  do); in chunks of one batch with one condition per group (the tightest layout); and the naive loop (the whole
  model per head, `Encoder.encode` with the mask hooked in); 12 heads, two per layer (`--heads` for others, e.g. `*`
  for the whole map); prints the ratios and whether the ranks agree.
- gpu: a random-init CodeBERT-size model (12 x 12 heads, hidden 768), every head as its own condition, whole-pool
  ranks on the device, in fp32 and bf16: time, the FLOP floor of the same work at the card's dense peak, and how
  many ranks bf16 changes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memory import PeakMemory, memory_mb  # noqa: E402

from ablation.conditions import build_conditions  # noqa: E402
from ablation.engine import WHOLE, Layout, run_conditions, side_inputs  # noqa: E402
from ablation.plan import GiB, memory_budget, plan_memory  # noqa: E402
from codesearch.builder import CorpusSettings, cached_corpus  # noqa: E402
from codesearch.metrics import whole_pool  # noqa: E402
from codesearch.readers import read_task  # noqa: E402
from heads.hooks import HeadMask  # noqa: E402
from heads.models import load_encoder, set_precision  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES_PER_QUERY = 43827 / 14918      # CodeXGLUE Python test: candidates per query
# Dense peaks of an H200 SXM (NVIDIA's data sheet halves the sparse tensor figures): FP32, TF32 and BF16.
H200_PEAK_TFLOPS = {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5}


# ---------------------------------------------------------------- synthetic pools of real code

def real_functions() -> tuple[list[str], list[str]]:
    """Every (query, code) of the built-in corpus, all splits."""
    path = cached_corpus(CorpusSettings(), progress=False)[0]
    queries, codes = [], []
    for split in ("train", "valid", "test"):
        task = read_task(path, split=split)
        queries += task.queries
        codes += [task.candidates[g] for g in task.gold]
    return queries, codes


def synthetic_task(n_candidates: int, n_queries: int | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """(queries, candidates, gold): real functions repeated, each copy told apart by a token; queries are the
    docstrings of candidates spread over the pool."""
    queries, codes = real_functions()
    n_queries = n_queries or max(1, round(n_candidates / CANDIDATES_PER_QUERY))
    candidates = [codes[i % len(codes)] + (f" # copy {i // len(codes)}" if i >= len(codes) else "")
                  for i in range(n_candidates)]
    gold = np.linspace(0, n_candidates - 1, n_queries).round().astype(int)
    return [queries[g % len(queries)] for g in gold], candidates, gold


def write_codexglue(folder: Path, n_candidates: int) -> int:
    """The synthetic pool in the CodeXGLUE cleaned form (test.jsonl, codebase.jsonl); returns the query count."""
    queries, candidates, gold = synthetic_task(n_candidates)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "codebase.jsonl", "w") as handle:
        for i, code in enumerate(candidates):
            handle.write(json.dumps({"url": f"u{i}", "code_tokens": code.split()}) + "\n")
    with open(folder / "test.jsonl", "w") as handle:
        for query, g in zip(queries, gold):
            handle.write(json.dumps({"url": f"u{g}", "docstring_tokens": query.split()}) + "\n")
    return len(queries)


# ---------------------------------------------------------------- memory

def ablate_command(folder: Path, max_memory_gb: float, threads: int) -> list[str]:
    return [sys.executable, "-m", "experiments", "ablate", f"data.path={folder}/data", "ablation.heads=5.*",
            "ablation.gradient=false", f"ablation.max_memory_gb={max_memory_gb}", "ablation.n_bootstrap=1000",
            "ablation.n_permutations=1000", "wandb.mode=disabled", "progress=false", f"output_dir={folder}/run",
            f"runs_dir={folder}/runs", f"threads={threads}"]


def memory(args) -> dict:
    results = []
    for pool in [int(p) for p in args.pools.split(",") if p]:
        with tempfile.TemporaryDirectory() as tmp:
            n_queries = write_codexglue(Path(tmp) / "data", pool)
            started = time.perf_counter()
            done = subprocess.run(ablate_command(Path(tmp), args.max_memory_gb, args.threads), cwd=ROOT,
                                  capture_output=True, text=True)
            seconds = time.perf_counter() - started
            if done.returncode:
                sys.exit(f"ablate failed on a pool of {pool}:\n{done.stderr[-3000:]}")
            record = json.loads((Path(tmp) / "run" / "run.json").read_text())
        plan = record["memory"]
        row = {"candidates": pool, "queries": n_queries, "seconds": round(seconds, 1),
               "unchunked_cache_gib": plan["whole_cache"] / GiB, "planned_peak_gib": plan["planned_peak"] / GiB,
               "measured_peak_gib": plan["measured_peak"] / GiB, "budget_gib": plan["budget"] / GiB,
               "chunks": plan["chunks"], "group_size": plan["group_size"], "timings": record["timings"],
               "estimate_s": record["time_estimate"],
               "plan_printed": [line for line in done.stderr.splitlines() if line.startswith("plan:")]}
        results.append(row)
        print(f"pool {pool:>6} ({n_queries:>5} queries): unchunked cache {row['unchunked_cache_gib']:6.2f} GiB | "
              f"planned {row['planned_peak_gib']:5.2f} GiB, measured peak {row['measured_peak_gib']:5.2f} GiB of "
              f"{row['budget_gib']:.2f} GiB | chunks {row['chunks']} | {seconds:.0f} s "
              f"(ablation {record['timings'].get('ablation_s', 0):.0f} s, estimated "
              f"{record['time_estimate']['ablation_s']:.0f} s)", flush=True)
    planned = [plan_only(int(p), args.max_memory_gb, args.threads) for p in args.plan_pools.split(",") if p]
    return {"pools": results, "planned_only": planned, "max_memory_gb": args.max_memory_gb}


def plan_only(pool: int, max_memory_gb: float, threads: int) -> dict:
    """What `ablate` plans for a pool too large to run here: the command is started and stopped once it has
    printed its plan (or its refusal), before the baseline."""
    with tempfile.TemporaryDirectory() as tmp:
        n_queries = write_codexglue(Path(tmp) / "data", pool)
        process = subprocess.Popen(ablate_command(Path(tmp), max_memory_gb, threads), cwd=ROOT, text=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        lines = []
        for line in process.stderr:
            lines.append(line.rstrip())
            if line.startswith("plan: time") or "cannot hold" in line:
                break
        process.kill()
        process.wait()
    printed = [line for line in lines if line.startswith("plan:") or "cannot hold" in line]
    print(f"pool {pool:>6} ({n_queries:>5} queries), planned only:\n  " + "\n  ".join(printed), flush=True)
    return {"candidates": pool, "queries": n_queries, "printed": printed}


# ---------------------------------------------------------------- time

def timed(device, work) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def speed(args) -> dict:
    encoder = load_encoder("builtin", device=args.device)
    queries, candidates, gold = synthetic_task(args.pool, args.pool)
    conditions = build_conditions(args.heads or "*.0,*.6", True, encoder.n_layers, encoder.n_heads)
    inputs = (side_inputs(encoder, queries, 128, 32), side_inputs(encoder, candidates, 256, 32))
    print(f"{encoder.info.name} on {args.device}, {torch.get_num_threads()} threads: {len(conditions)} heads, "
          f"{len(queries)} queries, {len(candidates)} candidates", flush=True)

    def ranks(q, c):
        return whole_pool(q, c, gold, rank_cutoff=0).ranks

    results, got = {}, {}
    variants = (("whole", WHOLE), ("one_batch_chunks_groups_of_12", Layout({"query": 1, "code": 1}, 12)),
                ("one_batch_chunks_groups_of_one", Layout({"query": 1, "code": 1}, 1)))
    for name, layout in variants:
        got[name] = {}
        with PeakMemory(encoder.device) as peak:
            seconds = timed(encoder.device, lambda: run_conditions(
                encoder, *inputs, conditions, lambda c, q, k: got[name].__setitem__(c.name, ranks(q, k)),
                layout=layout, progress=False))
        results[name] = {"seconds": seconds, "peak_memory_mb": memory_mb(peak)}
        print(f"engine, {name.replace('_', ' ') + ':':46} {seconds:7.1f} s", flush=True)
    naive = {}

    def naive_loop():
        for condition in conditions:
            mask = HeadMask(condition.heads, "zero")
            naive[condition.name] = ranks(encoder.encode(queries, 128, 32, hook=mask, progress=False),
                                          encoder.encode(candidates, 256, 32, hook=mask, progress=False))
    with PeakMemory(encoder.device) as peak:
        seconds = timed(encoder.device, naive_loop)
    results["naive_same_batches"] = {"seconds": seconds, "peak_memory_mb": memory_mb(peak)}
    print(f"naive, same batches: {seconds:7.1f} s", flush=True)
    for name, _ in variants:
        results[name]["ratio_over_naive"] = results[name]["seconds"] / seconds
        results[name]["ranks_differing"] = int(sum((got[name][c] != naive[c]).sum() for c in naive))
        print(f"{name}: {results[name]['ratio_over_naive']:.3f} x the naive time, ranks differing "
              f"{results[name]['ranks_differing']}", flush=True)
    results["setup"] = {"pool": args.pool, "heads": len(conditions), "spec": args.heads or "*.0,*.6",
                        "device": args.device, "threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    return results


# ---------------------------------------------------------------- gpu

def codebert_size(device: str):
    """A random-init model of CodeBERT's shape (12 layers of 12 heads, hidden 768, inner 3072) with the built-in
    tokenizer and recipe."""
    from transformers import AutoModel, BertConfig

    encoder = load_encoder("builtin", device=device)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=encoder.tokenizer.vocab_size, hidden_size=768, num_hidden_layers=12,
                        num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512)
    model = AutoModel.from_config(config, add_pooling_layer=False, attn_implementation="sdpa").eval().to(device)
    encoder.model = model
    encoder.n_layers, encoder.n_heads, encoder.head_dim = 12, 12, 64
    encoder.info.name = "random-init CodeBERT-size (12x12, hidden 768)"
    return encoder


def layer_flops(rows: int, width: int, hidden: int, inner: int) -> float:
    """One layer's forward over a padded batch: the four projections, the attention products, the feed-forward."""
    tokens = rows * width
    return 2 * tokens * (4 * hidden * hidden + 2 * hidden * inner) + 4 * rows * width * width * hidden


def work_flops(encoder, inputs, conditions, plan) -> float:
    """The FLOPs the engine must do: the walks of the cache up to each group's layer, and each condition's rerun
    (its layer's output projection and feed-forward, then every later layer)."""
    from ablation.engine import condition_groups

    config = encoder.model.config
    hidden, inner, layers = config.hidden_size, config.intermediate_size, encoder.n_layers
    per_layer = sum(layer_flops(*b.input_ids.shape, hidden, inner) for side in inputs for b in side.batches)
    tail = sum(2 * b.input_ids.numel() * (hidden * hidden + 2 * hidden * inner) for s in inputs for b in s.batches)
    walks = sum(max(c.first_layer for c in g) + 1 for g in condition_groups(conditions, plan.layout, plan.chunked))
    reruns = sum(tail + (layers - c.first_layer - 1) * per_layer for c in conditions)
    return walks * per_layer + reruns


def gpu(args) -> dict:
    encoder = codebert_size(args.device)
    device = encoder.device
    queries, candidates, gold = synthetic_task(args.candidates, args.queries)
    inputs = (side_inputs(encoder, queries, 128, args.batch_size), side_inputs(encoder, candidates, 256,
                                                                                args.batch_size))
    conditions = build_conditions(args.heads or "*", True, encoder.n_layers, encoder.n_heads)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{encoder.info.name} on {card}: {len(conditions)} conditions, {len(queries)} queries, "
          f"{len(candidates)} candidates", flush=True)
    results, ranks = {"card": card}, {}
    for precision in ("fp32", "bf16"):
        set_precision(encoder, precision)
        plan = plan_memory(encoder, {"query": inputs[0], "code": inputs[1]}, conditions,
                           memory_budget(args.max_memory_gb, device), 2 if precision == "bf16" else 4)
        print(f"{precision}: {plan.describe()}", flush=True)
        got = ranks[precision] = {}

        def rank(condition, q, c):
            got[condition.name] = whole_pool(q, c, gold, rank_cutoff=0, chunk_size=plan.score_rows).ranks
        seconds = timed(device, lambda: run_conditions(encoder, *inputs, conditions, rank, layout=plan.layout,
                                                       progress=True))
        flops = work_flops(encoder, inputs, conditions, plan)
        peak = args.peak_tflops.get(precision, H200_PEAK_TFLOPS[precision]) * 1e12
        results[precision] = {"seconds": seconds, "per_condition_s": seconds / len(conditions), "flops": flops,
                              "floor_s": flops / peak, "peak_tflops": peak / 1e12, "plan": plan.summary()}
        print(f"{precision}: {seconds:.0f} s ({seconds / len(conditions):.1f} s per condition); FLOP floor "
              f"{flops / peak:.0f} s at {peak / 1e12:.0f} TFLOP/s ({flops / peak / seconds:.0%} of peak)", flush=True)
    differing = sum(int((ranks["bf16"][c] != ranks["fp32"][c]).sum()) for c in ranks["fp32"])
    results["bf16_ranks_differing"] = {"count": differing, "of": len(conditions) * len(queries)}
    results["bf16_speedup"] = results["fp32"]["seconds"] / results["bf16"]["seconds"]
    print(f"bf16 against fp32: {differing} of {len(conditions) * len(queries)} ranks differ; "
          f"{results['bf16_speedup']:.2f} x faster", flush=True)
    return results


# ---------------------------------------------------------------- estimate

def estimate(args) -> dict:
    """What a whole map would take at the task's size, without running it: the plan and the time estimate `ablate`
    prints (from one timed batch on this machine), and the FLOP floor per condition at the given peaks."""
    from ablation.plan import estimate_time, time_per_layer_token

    queries, candidates, _ = synthetic_task(args.candidates, args.queries)
    results = {}
    for name, make in (("builtin", lambda: load_encoder("builtin", device=args.device)),
                       ("codebert_size", lambda: codebert_size(args.device))):
        encoder = make()
        inputs = {"query": side_inputs(encoder, queries, 128, args.batch_size),
                  "code": side_inputs(encoder, candidates, 256, args.batch_size)}
        conditions = build_conditions("*", True, encoder.n_layers, encoder.n_heads)
        plan = plan_memory(encoder, inputs, conditions, memory_budget(args.max_memory_gb, encoder.device))
        guess = estimate_time(encoder, inputs, conditions, plan, False, ("query", "code"),
                              time_per_layer_token(encoder, inputs))
        flops = work_flops(encoder, list(inputs.values()), conditions, plan) / len(conditions)
        floors = {p: flops / (t * 1e12) for p, t in {**H200_PEAK_TFLOPS, **args.peak_tflops}.items()}
        results[name] = {"plan": plan.summary(), "estimate": guess.__dict__, "flops_per_condition": flops,
                         "floor_s_per_condition": floors}
        print(f"{encoder.info.name}, {len(queries)} queries x {len(candidates)} candidates on {args.device}: "
              f"{plan.describe()}\n  {guess.describe()}\n  FLOP floor per condition: "
              + ", ".join(f"{p} {s:.1f} s" for p, s in floors.items()), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["memory", "time", "gpu", "estimate"])
    parser.add_argument("--pools", default="1000,4000,16000,43827", help="memory: candidate pool sizes")
    parser.add_argument("--plan-pools", default="", help="memory: pools only planned (tokenized, not run)")
    parser.add_argument("--max-memory-gb", type=float, default=None, help="the budget (memory: default 2)")
    parser.add_argument("--threads", type=int, default=0, help="memory: torch threads (0: as torch chooses)")
    parser.add_argument("--pool", type=int, default=300, help="time: queries and candidates")
    parser.add_argument("--queries", type=int, default=14918, help="gpu, estimate: queries")
    parser.add_argument("--candidates", type=int, default=43827, help="gpu, estimate: candidates")
    parser.add_argument("--batch-size", type=int, default=None, help="gpu (default 128), estimate (default 32): "
                        "sequences per batch")
    parser.add_argument("--peak-tflops", type=json.loads, default={}, help='gpu: the card\'s dense peaks, e.g. '
                        '\'{"fp32": 67, "bf16": 989.5}\' (default: an H200 SXM\'s)')
    parser.add_argument("--heads", default=None, help="gpu: the heads, one condition each (default every head); "
                        "time: default *.0,*.6")
    parser.add_argument("--device", default=None, help="time: cpu (default); gpu: cuda (default)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    args.batch_size = args.batch_size or (128 if args.part == "gpu" else 32)
    if args.part == "memory":
        args.max_memory_gb = args.max_memory_gb or 2.0
        results = memory(args)
    elif args.part == "time":
        args.device = args.device or "cpu"
        results = speed(args)
    elif args.part == "gpu":
        args.device = args.device or "cuda"
        results = gpu(args)
    else:
        args.device = args.device or "cpu"
        results = estimate(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
