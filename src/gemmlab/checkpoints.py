"""Training checkpoints: one file with what a run needs to continue exactly where it stopped.

    checkpoints.save(path, state)              # atomic: readers see the old file or the new, never half of one
    state = checkpoints.load(path, settings)   # CheckpointError: missing, unreadable, foreign, other settings
    checkpoints.rng_states(), checkpoints.set_rng_states(states)   # torch's, NumPy's and Python's generators

A checkpoint is a dict saved with torch.save and read back with weights_only=True, so loading one
runs no code from the file. gemmlab.train decides what goes in (model, optimizer, epoch, ...).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from gemmlab._files import write_atomically

FORMAT = "gemmlab train checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be written, cannot be read, or belongs to another run."""


def check_target(path: str | os.PathLike) -> None:
    """CheckpointError now, rather than after the first epoch, if `path` cannot be written."""
    directory = Path(path).absolute().parent
    if not directory.is_dir():
        raise CheckpointError(f"{path}: cannot write a checkpoint there, directory {directory} does not exist")


def save(path: str | os.PathLike, state: dict) -> None:
    """Write `state` to `path` atomically: into a temporary file in the same directory, flushed and
    fsynced, then renamed over `path` (a kill at any moment leaves the previous checkpoint whole)."""
    path = Path(path)
    try:
        write_atomically(path, lambda f: torch.save({"format": FORMAT, "version": VERSION, **state}, f), binary=True)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot write a checkpoint there ({e})") from e


def load(path: str | os.PathLike, settings: dict) -> dict:
    """The checkpoint at `path`, checked: a readable gemmlab checkpoint written with these `settings`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, weights_only=True)
    except Exception as e:  # truncated, damaged or foreign: zip, pickle and torch each raise their own
        # The gist of torch's message: weights_only loading puts a long preamble before its reason.
        reason = (str(e).rpartition("WeightsUnpickler error:")[2].strip().split("\n") or [""])[0].split(". ")[0]
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {reason}); expected a "
                              f"file written by gemmlab train --checkpoint") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a torch file, but not a checkpoint written by gemmlab train --checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {state.get('version')!r}; this gemmlab reads "
                              f"version {VERSION}")
    saved = state["settings"]
    differ = [f"{key} {saved.get(key)!r} there, {value!r} here" for key, value in settings.items()
              if saved.get(key) != value]
    if differ:
        raise CheckpointError(f"{path} was written by a run with other settings ({'; '.join(differ)}): resume "
                              f"with the same settings, or start a new run without --resume")
    return state


def rng_states() -> dict:
    """The states of the global generators: torch's (CPU), NumPy's legacy one and Python's random."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    # As a tensor and plain numbers: weights_only loading accepts no NumPy arrays.
    return {"torch": torch.get_rng_state(), "numpy": (kind, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss),
            "python": random.getstate()}


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    kind, key, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])
