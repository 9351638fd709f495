"""Whole-file writes that a crash cannot tear, readable by everyone the user's umask allows.

Every file is written to a temporary name in its folder and renamed into place (``os.replace`` is atomic on
POSIX), so a process killed at any moment leaves only whole files. ``tempfile.mkstemp`` creates its file with
mode 0600 whatever the umask; the final file gets ``0666 & ~umask`` instead (0644 under the usual 022), as
``open()`` would have given it, so a shared results folder or a served report stays readable.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bnlab.errors import BnlabError


def _file_mode() -> int:
    # The umask can only be read by setting it: set, restore at once (no other thread writes files meanwhile).
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _cannot_write(path: Path, exc: OSError) -> BnlabError:
    return BnlabError(f"cannot write {path}: {exc.strerror or exc}")


def ensure_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) or raise a one-line ``BnlabError``."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot_write(Path(path), exc) from None


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place with the umask's mode."""
    path = Path(path)
    ensure_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _cannot_write(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def finite_json(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None: JSON has no such numbers, and a file holding
    ``NaN`` or ``Infinity`` is not JSON that other tools can read."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def to_json(obj: Any, **kwargs: Any) -> str:
    """Strict JSON (``allow_nan=False`` after :func:`finite_json`); numpy scalars and arrays become numbers/lists."""
    return json.dumps(finite_json(_plain(obj)), allow_nan=False, default=_default, **kwargs)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy scalar or array
        return _plain(obj.tolist())
    if hasattr(obj, "model_dump"):  # a pydantic config
        return _plain(obj.model_dump(mode="json"))
    return obj


def _default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, to_json(obj, indent=2, sort_keys=True))


def write_text_atomic(path: Path, text: str) -> None:
    atomic_write(Path(path), lambda p: p.write_text(text, encoding="utf-8"))


def write_parquet_atomic(path: Path, frame: pd.DataFrame, metadata: dict[str, Any] | None = None) -> None:
    """``frame`` as Parquet; ``metadata`` (JSON) goes into the file's key-value metadata under ``bnlab``."""

    def write(p: Path) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if metadata is not None:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"bnlab": to_json(metadata)})
        pq.write_table(table, p)

    atomic_write(Path(path), write)


def read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise BnlabError(f"cannot read stored table {path}: {exc}") from None


def read_parquet_metadata(path: Path) -> dict[str, Any]:
    """The ``bnlab`` metadata written by :func:`write_parquet_atomic` (read from the footer only), or {}."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception as exc:  # noqa: BLE001
        raise BnlabError(f"cannot read stored table {path}: {exc}") from None
    raw = meta.get(b"bnlab")
    return json.loads(raw) if raw else {}


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BnlabError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BnlabError(f"{path} is unreadable or corrupt: {exc}") from None


def remove_empty_dirs(path: Path) -> None:
    """Remove ``path`` and the folders under it that hold no file (a failed first run's scaffolding); files and
    the folders holding them are never touched."""
    path = Path(path)
    if not path.is_dir():
        return
    for folder in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass
    try:
        path.rmdir()
    except OSError:
        pass
