"""Atomic file writes: nothing a user saved is ever lost or half-written.

:func:`atomic_path` yields a temporary path in the destination's folder; when the block finishes
the file is flushed to disk and renamed over the destination in one ``os.replace`` (atomic on
POSIX and Windows), and if the block raises, the temporary file is removed and the destination is
untouched. Every writer in the library (checkpoints, snapshots, reports, plots) goes through it.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from typing import Any, Iterator

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_json"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[str]:
    """Yield a temporary file path next to ``path``; on success it replaces ``path`` atomically.

    Examples:
        >>> import pathlib, tempfile
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = pathlib.Path(tmp).write_text("done")
        >>> target.read_text()
        'done'
    """
    target = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(target)
    os.makedirs(folder, exist_ok=True)
    # A fresh unique name that the writer creates itself, so the file gets the usual permissions
    # (the user's umask); tempfile.mkstemp would leave every saved file readable by its owner only.
    tmp = os.path.join(folder, f".{os.path.basename(target)}.{uuid.uuid4().hex}{suffix}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write(text)


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=1))
