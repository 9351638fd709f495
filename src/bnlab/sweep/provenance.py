"""What produced a result: package versions, device, host, time, and the git commit of the code being run.

The commit is that of the repository holding the current working directory (where a user runs their study
from), with a ``dirty`` flag when tracked files differ from it; outside any repository both are None. Each chunk
carries its own record, so a run resumed on another machine or device says which chunk came from where.
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any


def _git(*args: str, cwd: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@lru_cache(maxsize=8)
def git_state(cwd: str) -> dict[str, Any]:
    """``{"git_commit": sha or None, "git_dirty": bool or None}`` for the repository around ``cwd``."""
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd)
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


@lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    import numpy
    import pandas
    import torch

    import bnlab

    return {
        "bnlab": bnlab.__version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "torch": torch.__version__,
    }


def _accelerator(device: str) -> str | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.get_device_name(torch.device(device)) if torch.cuda.is_available() else None


def environment(device: str | None = None) -> dict[str, Any]:
    """Versions, device (and the accelerator's name), host, platform, time and the working directory's git state."""
    device = device or "cpu"
    return {
        **_versions(),
        "platform": platform.platform(),
        "host": platform.node(),
        "pid": os.getpid(),
        "device": device,
        "cuda_device": _accelerator(device),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **git_state(os.getcwd()),
    }
