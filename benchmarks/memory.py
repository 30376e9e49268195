"""Peak memory of a block of work, for the benchmarks (resident set sampled every 50 ms; CUDA's own peak)."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heads.memory import process_bytes as rss_bytes  # noqa: E402


class PeakMemory:
    """Peak growth of the resident set (and of CUDA memory on a GPU) while the block runs."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        self.start = rss_bytes()
        self.peak = self.start
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.cuda_start = torch.cuda.memory_allocated(self.device)
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.05)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss_bytes())
        self.growth = self.peak - self.start
        if self.device.type == "cuda":
            self.cuda_growth = torch.cuda.max_memory_allocated(self.device) - self.cuda_start
        return False


def memory_mb(memory: PeakMemory) -> dict | float:
    value = round(memory.growth / 2**20, 1)
    if memory.device.type == "cuda":
        return {"host": value, "cuda": round(memory.cuda_growth / 2**20, 1)}
    return value
