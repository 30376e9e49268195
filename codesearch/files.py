"""Atomic file writes: a reader never sees a half-written result that looks complete."""
from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import os
import shutil
import sys
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


class ResultFiles(list):
    """The names of a run's result files, each written atomically into `folder` as it is added."""

    def __init__(self, folder: str | os.PathLike):
        super().__init__()
        self.folder = Path(folder)

    def csv(self, name: str, frame) -> None:
        atomic_write_csv(self.folder / name, frame)
        self.append(name)

    def text(self, name: str, text: str) -> None:
        atomic_write_text(self.folder / name, text)
        self.append(name)


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


def replace_directory(built: Path, path: Path, carry: Callable[[str], bool] | None = None) -> None:
    """Move the complete folder `built` to `path`. An older folder at `path` stays whole until the new one is in
    place: the two are swapped in one atomic step (Linux's renameat2 RENAME_EXCHANGE), so a crash leaves the old
    folder or the new one at `path`, never neither. Where the swap is not available, the old folder is moved aside
    under a unique name (`.<name>.<random>.old`, which `recover_directory` puts back) and the new one moved in.
    Entries of the old folder for which `carry(name)` holds (files a user put there) are moved into the new one
    when it has no entry of that name; then the old folder is removed."""
    built, path = Path(built), Path(path)
    if not path.exists():
        os.replace(built, path)
        return
    if _exchange(built, path):
        old = built
    else:
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
        os.replace(path, old)   # onto the empty placeholder: the name is ours alone
        os.replace(built, path)
    for entry in sorted(old.iterdir()) if carry else ():
        if carry(entry.name) and not os.path.lexists(path / entry.name):
            os.replace(entry, path / entry.name)
    shutil.rmtree(old, onerror=_warn_left(old))


def recover_directory(path: Path) -> Path | None:
    """Put back the folder a crash left aside between the two moves of `replace_directory` (no folder at `path`,
    one `.<name>.*.old` beside it); returns it, or None when there is nothing to recover."""
    path = Path(path)
    if path.exists() or not path.parent.is_dir():
        return None
    aside = sorted(path.parent.glob(f".{glob_escape(path.name)}.*.old"), key=lambda p: -p.stat().st_mtime)
    if not aside:
        return None
    os.replace(aside[0], path)
    return aside[0]


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the system cannot (not Linux, an old kernel or file system)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _warn_left(folder: Path):
    def onerror(_function, failed, exc_info):
        if failed == str(folder):
            print(f"warning: could not remove the replaced run's old folder {folder} ({exc_info[1]}); remove it "
                  f"yourself", file=sys.stderr)
    return onerror
