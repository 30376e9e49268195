"""A W&B sweep file run with no W&B server.

The next configuration comes from W&B's own open-source sweep engine (`sweeps.next_run`), the command line is
the one `wandb agent` would launch (the file's `command`, `${env} ${interpreter} ${program} ${args}` by default),
and every run logs offline. The sweep's state is a file in `<runs_dir>/sweeps/`: a configuration is recorded
once its run has finished, so an interrupted sweep resumes where it stopped and never reruns a finished one.
"""
from __future__ import annotations

import ctypes
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from codesearch.errors import RunsFailed, UserError
from codesearch.files import atomic_write_text
from codesearch.hashing import content_hash

from .sweep_file import ProgramSchema, check_command_lines, command_line, read_sweep_file, sweep_engine


def _end_with_parent() -> None:
    """In the run's process: end it when the sweep process dies (even by kill -9), so that no orphan run goes on
    unrecorded while a resumed sweep starts the same configuration again. Linux only; elsewhere a no-op."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class SweepState:
    """Finished configurations of one sweep file, on disk, held by one process at a time (a second one on the
    same sweep would run every configuration again, into the same folders)."""

    def __init__(self, folder: Path):
        self.path = folder / "state.json"
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = open(folder / "lock", "a+")  # released by the system when this process ends, however
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another `codebert-heads sweep` is running this sweep ({folder}); wait for it, or "
                            f"start `wandb agent`s, which share a sweep through the W&B server") from None
        self.runs: list[dict] = json.loads(self.path.read_text())["runs"] if self.path.is_file() else []

    def close(self) -> None:
        self._lock.close()  # and with it the lock

    def record(self, config: dict, returncode: int) -> None:
        self.runs.append({"config": config, "state": "finished" if returncode == 0 else "failed",
                          "returncode": returncode})
        atomic_write_text(self.path, json.dumps({"runs": self.runs}, indent=2) + "\n")

    def forget_failed(self) -> None:
        self.runs = [r for r in self.runs if r["state"] == "finished"]
        atomic_write_text(self.path, json.dumps({"runs": self.runs}, indent=2) + "\n")

    def as_sweep_runs(self):
        sweeps = sweep_engine()
        return [sweeps.SweepRun(config={k: {"value": v} for k, v in r["config"].items()},
                                state=sweeps.RunState.finished if r["state"] == "finished"
                                else sweeps.RunState.failed)
                for r in self.runs]


def run_local_sweep(path: Path, runs_dir: str, schema: ProgramSchema, count: int | None = None,
                    retry_failed: bool = False) -> Path:
    """Run the sweep file's configurations (at most `count` now), each as its own process; returns the folder of
    the sweep's state."""
    spec = read_sweep_file(path, schema)
    total = check_command_lines(spec, path, schema)  # refuse a bad grid before the first run, not halfway through
    # Keyed by what the file says, not how: an edited comment keeps the sweep's state.
    state = SweepState(Path(runs_dir).expanduser() / "sweeps" / f"{path.stem}-{content_hash(spec, 10)}")
    try:
        if retry_failed:
            state.forget_failed()
        _launch_runs(spec, path, state, total, count, runs_dir)
    finally:
        state.close()
    finished = sum(r["state"] == "finished" for r in state.runs)
    failed = len(state.runs) - finished
    print(f"sweep {path.stem}: {finished} runs finished, {failed} failed; state in {state.path}")
    if failed:
        raise RunsFailed(f"{failed} of the sweep's {len(state.runs)} runs failed; `--retry-failed` runs them again")
    return state.path.parent


def _launch_runs(spec: dict, path: Path, state: SweepState, total: int, count: int | None, runs_dir: str) -> None:
    """Launch the engine's next configurations, one at a time, recording each when its run ends."""
    # Runs put their folders beside the sweep's state: a runs_dir given here reaches them as one more key=value
    # (by default none is added, and the command line is exactly the agent's).
    passes_runs_dir = runs_dir != "runs" and "runs_dir" not in spec.get("parameters", {})
    extra = [f"runs_dir={runs_dir}"] if passes_runs_dir else []
    env = {**os.environ, "WANDB_MODE": "offline"}
    sweeps = sweep_engine()
    launched = 0
    while count is None or launched < count:
        proposal = sweeps.next_run(spec, state.as_sweep_runs())
        if proposal is None:
            return
        config = {k: v["value"] for k, v in proposal.config.items()}
        argv = command_line(spec, config) + extra
        of_total = f" of {total}" if spec.get("method") == "grid" else ""
        print(f"[sweep {path.stem}] run {len(state.runs) + 1}{of_total}: {shlex.join(argv)}", file=sys.stderr,
              flush=True)
        returncode = subprocess.run(argv, env=env, preexec_fn=_end_with_parent).returncode
        if returncode in (130, -2):  # interrupted with Ctrl-C: stop, and leave the run for the next resume
            raise KeyboardInterrupt
        state.record(config, returncode)
        launched += 1
        if returncode != 0:
            how = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
            print(f"[sweep {path.stem}] run failed ({how}); `--retry-failed` runs it again", file=sys.stderr)
