"""Where torch runs: one place that turns a user's device string into a checked ``torch.device``."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device`` → ``torch.device``, checked.

    A device this machine does not have is a one-line ``ValueError`` that says so (instead of
    an assertion deep inside torch, or a model file reported as corrupt).
    """
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise ValueError(f"device {device!r} is not supported; use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but CUDA is not available here "
                         f"(this torch {torch.__version__} sees no GPU); use --device cpu")
    count = torch.cuda.device_count()
    if resolved.index is not None and resolved.index >= count:
        raise ValueError(f"device {device!r} was asked for, but this machine has {count} GPU(s) "
                         f"(cuda:0 … cuda:{count - 1})")
    return resolved
