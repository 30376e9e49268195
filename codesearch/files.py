"""Atomic file writes: a reader never sees a half-written result that looks complete."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Let `write(tmp)` write the file under a temporary name beside `path`, then rename it into place: a reader
    sees the old file or the whole new one, never a part (for writers that want a path: torch.save, savefig)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a result file is as any other file here
        write(Path(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_csv(path: str | os.PathLike, frame) -> None:
    """A pandas frame as CSV, no index, every float exactly as computed."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)  # shortest repr that reads back to the same float
    atomic_write_text(path, buffer.getvalue())


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike):
    """Build a directory under a temporary name; it appears at `path` only if the block finishes.

    Yields the temporary directory. An existing `path` is replaced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary shared folder
    try:
        yield tmp
        replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_directory(built: Path, path: Path) -> None:
    """Move the complete folder `built` to `path`. An older folder at `path` stays whole until then: it is moved
    aside (`.<name>.old`), the new one put in its place, and only then removed."""
    path = Path(path)
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(built, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(built, path)
