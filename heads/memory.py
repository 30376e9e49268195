"""How much memory this process holds and may take: its resident set and the machine's available memory (Linux
`/proc`), or a CUDA device's."""
from __future__ import annotations

import torch


def _proc_field(path: str, name: str) -> int:
    """A `kB` field of a /proc file, in bytes; 0 where there is none (not Linux)."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def process_bytes() -> int:
    """The resident set of this process now."""
    return _proc_field("/proc/self/status", "VmRSS")


def peak_process_bytes() -> int:
    """The largest resident set this process has had."""
    return _proc_field("/proc/self/status", "VmHWM")


def available_bytes() -> int:
    """Memory the machine can still give without swapping (0 where unknown)."""
    return _proc_field("/proc/meminfo", "MemAvailable")


def device_bytes(device: torch.device) -> tuple[int, int]:
    """(held by this process, free) on a CUDA device."""
    free, _total = torch.cuda.mem_get_info(device)
    return torch.cuda.memory_allocated(device), free
