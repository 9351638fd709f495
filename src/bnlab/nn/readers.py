"""Readers for the standard dataset file formats: IDX (MNIST, Fashion-MNIST) and CIFAR-10 pickle batches.

Every malformed file (bad magic number, truncated payload, labels out of range, images/labels count mismatch,
unreadable pickle) raises a one-line ``BnlabError`` that names the file.
"""

from __future__ import annotations

import gzip
import pickle
import re
from pathlib import Path

import numpy as np

from bnlab.errors import BnlabError

# IDX magic: two zero bytes, a type code (0x08 = unsigned byte), then the number of dimensions.
_IDX_UBYTE = 0x08


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip data (by its magic number 1f 8b, whatever its name)."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" or path.suffix == ".gz" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise BnlabError(f"cannot read {path}: {exc}") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes into an array of its declared shape.

    Layout: magic ``00 00 08 ndim``, then ``ndim`` big-endian uint32 sizes, then prod(sizes) bytes.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE or raw[3] == 0:
        raise BnlabError(f"{path}: not an unsigned-byte IDX file (bad magic number {raw[:4].hex()!r})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise BnlabError(f"{path}: truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        raise BnlabError(f"{path}: IDX payload has {len(raw) - header} bytes, header {shape} needs {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def idx_names(stem: str) -> list[str]:
    """The file names accepted for an IDX stem such as ``train-images-idx3-ubyte``: the official name and the
    mirrors' dotted variant (``train-images.idx3-ubyte``), each raw or gzipped (``.gz``)."""
    dotted = stem.replace("-idx", ".idx")
    return [name + gz for name in dict.fromkeys((stem, dotted)) for gz in ("", ".gz")]


def find_idx(folder: Path, stem: str) -> Path | None:
    """The first accepted variant of ``stem`` present in ``folder`` (see ``idx_names``), or None."""
    return next((folder / n for n in idx_names(stem) if (folder / n).is_file()), None)


def _find(folder: Path, stem: str) -> Path:
    found = find_idx(folder, stem)
    if found is None:
        near = near_misses(folder, (stem,))
        hint = f" (found {', '.join(p.name for p in near)}: rename it to {stem}[.gz])" if near else ""
        raise BnlabError(
            f"missing {folder / stem}[.gz]{hint}; run `bnlab data add NAME FOLDER` or `bnlab data fetch NAME`"
        )
    return found


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def near_misses(folder: Path, stems: tuple[str, ...]) -> list[Path]:
    """Files in ``folder`` that look like one of ``stems`` but are no accepted name: another case, separator or
    extension (``.zip``, ``.tar``, ``Train_Images.idx3``, a browser's ``(1)`` copy...)."""
    if not folder.is_dir():
        return []
    accepted = {n for s in stems for n in idx_names(s)}
    keys = {_squash(s.split("-idx")[0]) for s in stems}  # e.g. "trainimages"
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.name not in accepted and any(k in _squash(p.name) for k in keys)
    )


def check_labels(labels: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    """Labels must be a 1-D integer vector with values in [0, num_classes)."""
    if labels.ndim != 1:
        raise BnlabError(f"{path}: labels must be one-dimensional, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise BnlabError(f"{path}: label {int(labels.max())} out of range [0, {num_classes})")
    return labels.astype(np.int64)


def read_idx_split(folder: str | Path, prefix: str, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, rows, cols) uint8 and labels (n,) int64 for ``prefix`` in {"train", "t10k"}."""
    folder = Path(folder)
    img_path = _find(folder, f"{prefix}-images-idx3-ubyte")
    lab_path = _find(folder, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(img_path)
    if images.ndim != 3:
        raise BnlabError(f"{img_path}: expected 3-D images, got shape {images.shape}")
    labels = check_labels(read_idx(lab_path), num_classes, lab_path)
    if len(labels) != len(images):
        raise BnlabError(f"{lab_path}: {len(labels)} labels for {len(images)} images in {img_path.name}")
    return images, labels


def read_cifar_batch(path: str | Path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: a pickled dict with ``data`` (n, 3072) uint8 and ``labels`` (n,).

    Returns images (n, 3, 32, 32) uint8 (the 3072 bytes are channel-major: R plane, G plane, B plane) and labels.
    Note: unpickling runs code from the file; read only files you trust (the official archive is checksummed).
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
    except FileNotFoundError:
        raise BnlabError(f"missing {path}; run `bnlab data fetch cifar10` or copy the official batches") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise BnlabError(f"{path}: not a readable CIFAR pickle batch ({type(exc).__name__})") from None
    if not isinstance(batch, dict):
        raise BnlabError(f"{path}: CIFAR batch must be a dict, got {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise BnlabError(f"{path}: CIFAR batch lacks 'data' or 'labels'")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise BnlabError(f"{path}: CIFAR data must be uint8 of shape (n, 3072), got {data.dtype} {data.shape}")
    labels = check_labels(np.asarray(labels), num_classes, path)
    if len(labels) != len(data):
        raise BnlabError(f"{path}: {len(labels)} labels for {len(data)} images")
    return data.reshape(-1, 3, 32, 32), labels


IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR_BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")


def missing_idx_files(folder: str | Path) -> list[Path]:
    """The IDX files (any accepted variant, see ``idx_names``) of an MNIST-style split that ``folder`` lacks."""
    folder = Path(folder)
    return [folder / s for s in IDX_STEMS if find_idx(folder, s) is None]


def missing_cifar_files(folder: str | Path) -> list[Path]:
    """The CIFAR-10 python batches that ``folder`` (or its ``cifar-10-batches-py``) lacks."""
    folder = Path(folder)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    return [folder / b for b in CIFAR_BATCHES if not (folder / b).exists()]


def read_cifar10(folder: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The five training batches and the test batch of ``cifar-10-batches-py`` (or a folder holding them)."""
    folder = Path(folder)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    parts = [read_cifar_batch(folder / b) for b in CIFAR_BATCHES[:-1]]
    x_test, y_test = read_cifar_batch(folder / CIFAR_BATCHES[-1])
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return x_train, y_train, x_test, y_test
