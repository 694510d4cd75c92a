"""Replace a file whole: write a temporary file next to it, then rename it over the old one.

Every file that something else may be reading while it is rewritten goes through here: bash reads
scripts as it runs them, a task's `latest.json` is read by reconcile while the task writes it,
and two reconcile passes or launches may write the same file at once. A reader therefore sees
the old file or the new one, never half of either; the temporary name is unique per writer
(`mkstemp`), so two writers never share it, and it is removed when writing fails.

Kept free of slurmexp imports: the task side (`slurmexp.log_metrics`, the submitit runner) uses
it inside jobs.
"""
from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from pathlib import Path
from typing import IO, Callable


@functools.lru_cache(maxsize=1)
def umask() -> int:
    """The process's umask. os.umask can only be read by setting it, which is not thread-safe,
    so it is read once."""
    current = os.umask(0o022)
    os.umask(current)
    return current


def replace_file(path: str | os.PathLike[str], data: str | bytes | Callable[[IO[bytes]], object],
                 mode: int | None = None, *, apply_umask: bool = True, fsync: bool = False) -> None:
    """Write `data` (text as UTF-8 with "\\n" line ends, bytes as they are, or a function that
    writes into the open binary file) to `path` atomically. `mode` is applied through the
    umask like open() would (default 0o666 & ~umask), or as it is with `apply_umask=False`
    (a file another account must read whatever the writer's umask); `fsync` makes the data durable before
    the rename, for files whose loss after a power cut would lose a job."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, str):
                fh.write(data.encode("utf-8"))
            elif isinstance(data, bytes):
                fh.write(data)
            else:
                data(fh)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        wanted = 0o666 if mode is None else mode
        os.chmod(tmp, wanted & ~umask() if apply_umask else wanted)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
