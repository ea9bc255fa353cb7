"""Atomic file writes: a temporary file in the same folder, flushed to disk, then renamed.

A reader (or a run killed mid-write) sees the old file or the new one, never half of one. Used
for model files, checkpoints, the training log, metrics, the model card and the run's config.
The model-file marker and format version live here, beside ``atomic_torch_save``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

FORMAT = "nnpot-model"
FORMAT_VERSION = 3  # 1: one potential; 2: adds committee files (kind: committee); 3: adds
#                      pair_repulsion (written as 3 only by potentials that have one, so every
#                      other file stays readable by older nnpot, and an older nnpot refuses a
#                      file whose energies it would get wrong)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a binary temporary file, fsync it, and rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Name: .NAME.<random>.tmp (hidden; .gitignore's `.*.tmp` matches it)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the mode an ordinary new file gets.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(handle, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def durable_append(path: str | os.PathLike, text: str) -> None:
    """Append ``text`` (UTF-8) to ``path`` in one write and flush it to disk: a run killed
    mid-way leaves whole records only (a labelled frame, a failure line)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half file."""
    return atomic_write(path, lambda f: torch.save(payload, f))
