"""Where computations run: CPU by default, a CUDA GPU when asked for and present."""

from __future__ import annotations

import torch

from bnlab.errors import BnlabError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"cpu" -> the CPU; "cuda" or "cuda:N" -> that GPU, with a clear error where there is none."""
    try:
        dev = torch.device(device or "cpu")
    except RuntimeError:
        raise BnlabError(f"unknown device {device!r} (use 'cpu' or 'cuda')") from None
    if dev.type not in ("cpu", "cuda"):
        raise BnlabError(f"unsupported device {device!r} (use 'cpu' or 'cuda')")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BnlabError(f"device {device!r} requested but no CUDA GPU is available")
    return dev
