"""How much memory this process holds and may take: its resident set and the machine's available memory (Linux
`/proc`), or a CUDA device's."""
from __future__ import annotations

from pathlib import Path

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
    """Memory this process can still take without swapping (0 where unknown): the machine's available memory, or
    less where a cgroup limit (a SLURM job's --mem, a container's -m) leaves less."""
    available = _proc_field("/proc/meminfo", "MemAvailable")
    left = _cgroup_left()
    return min(available, left) if left is not None and available else available


def _cgroup_left() -> int | None:
    """What this process's memory cgroup (v2, else v1) still allows; None without a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 2**60:
            return None
        return max(0, int(limit) - usage)
    return None


def device_bytes(device: torch.device) -> tuple[int, int]:
    """(held by this process, free) on a CUDA device."""
    free, _total = torch.cuda.mem_get_info(device)
    return torch.cuda.memory_allocated(device), free
