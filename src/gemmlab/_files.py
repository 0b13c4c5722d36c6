"""Writing a file atomically, for the tuned table (autotune) and checkpoints."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def write_atomically(path: Path, write: Callable[[IO], None], binary: bool = False) -> None:
    """write(f) into a temporary file beside path, synced, then renamed over path (the rename synced
    too): a reader, or a machine that loses power, sees the old file or the new one, never a part.
    OSError if the folder cannot take the temporary file; nothing is left behind on any error."""
    folder = path.absolute().parent
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
