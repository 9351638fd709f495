"""A user's dataset as one ``.npz`` file: arrays ``X_train, y_train, X_test, y_test``, checked before any run.

Inputs are used as given (no normalisation [ours]: the user's preprocessing is part of the experiment); X is
(n, features) or (n, C, H, W), the same per-example shape in both splits; y holds integer class labels
0..K-1 with K = 1 + the largest training label, test labels within that range.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from bnlab.errors import BnlabError
from bnlab.nn.data import Dataset

KEYS = ("X_train", "y_train", "X_test", "y_test")


def load_npz(path: str | Path) -> Dataset:
    """Read and validate ``path``; every problem is one ``BnlabError`` line naming the file and the array."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in KEYS if k not in archive.files]
            if missing:
                raise BnlabError(f"{path} lacks {', '.join(missing)} (an .npz needs {', '.join(KEYS)})")
            arrays = {k: archive[k] for k in KEYS}
    except BnlabError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise BnlabError(f"cannot read {path} as an .npz archive: {exc}") from None
    for split in ("train", "test"):
        x, y = arrays[f"X_{split}"], arrays[f"y_{split}"]
        if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
            raise BnlabError(f"{path}: X_{split} and y_{split} must be numeric, got {x.dtype} and {y.dtype}")
        if x.ndim not in (2, 4) or y.ndim != 1:
            raise BnlabError(
                f"{path}: X_{split} must be (n, features) or (n, C, H, W) and y_{split} (n,), "
                f"got {x.shape} and {y.shape}"
            )
        if len(x) != len(y) or len(x) == 0:
            raise BnlabError(f"{path}: X_{split} has {len(x)} rows but y_{split} has {len(y)} labels")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise BnlabError(f"{path}: X_{split} or y_{split} holds NaN or infinite values")
        if np.any(y != np.round(y)) or np.any(y < 0):
            raise BnlabError(f"{path}: y_{split} must hold class labels 0, 1, 2, ... (non-negative integers)")
    if arrays["X_train"].shape[1:] != arrays["X_test"].shape[1:]:
        raise BnlabError(
            f"{path}: X_train examples are {arrays['X_train'].shape[1:]} but X_test examples "
            f"{arrays['X_test'].shape[1:]}"
        )
    k = int(arrays["y_train"].max()) + 1
    if k < 2:
        raise BnlabError(f"{path}: y_train holds a single class")
    if arrays["y_test"].max() >= k:
        raise BnlabError(f"{path}: y_test has label {int(arrays['y_test'].max())}, unseen in y_train (0..{k - 1})")
    return Dataset(
        path.stem,
        torch.as_tensor(arrays["X_train"], dtype=torch.float32),
        torch.as_tensor(arrays["y_train"].astype(np.int64)),
        torch.as_tensor(arrays["X_test"], dtype=torch.float32),
        torch.as_tensor(arrays["y_test"].astype(np.int64)),
        k,
    )
