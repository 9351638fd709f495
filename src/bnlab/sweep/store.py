"""The result store: one folder per run, keyed by a hash of its fully resolved config.

Layout of a run folder ``ROOT/EXPERIMENT/RUN_ID/``::

    config.json        the resolved config (what the hash is computed from)
    environment.json   package versions, device, git commit, host, time
    chunks/KEY.parquet one tidy table per finished unit of work (resume skips these)
    tables/NAME.parquet  tidy tables assembled from the chunks
    summary.json       the experiment's claims (prediction, measurement, verdict)
    COMPLETE           marker: every chunk done and the tables written

Every file is written to a temporary name in the same folder and renamed into place (``os.replace`` is atomic
on POSIX), so a run killed at any moment leaves only whole files, and what finished is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from bnlab.errors import BnlabError

_COMPLETE = "COMPLETE"
# Part of every run's identity; bump when a change to the code changes the numbers a config produces.
RESULTS_VERSION = 1


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace): equal configs give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: Mapping[str, Any], length: int = 12) -> str:
    """The run identity: the first ``length`` hex digits of SHA-256 of the canonical JSON config."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:length]


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def write_text_atomic(path: Path, text: str) -> None:
    _atomic_write(Path(path), lambda p: p.write_text(text, encoding="utf-8"))


def write_parquet_atomic(path: Path, frame: pd.DataFrame) -> None:
    _atomic_write(Path(path), lambda p: frame.to_parquet(p, index=False))


def read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise BnlabError(f"cannot read stored table {path}: {exc}") from None


def environment(device: str | None = None) -> dict[str, Any]:
    """What produced a result: versions, device, git commit of the code, host and time."""
    import numpy
    import torch

    import bnlab

    info: dict[str, Any] = {
        "bnlab": bnlab.__version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "pandas": pd.__version__,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "host": platform.node(),
        "device": device or "cpu",
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": None,
    }
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0:
            info["git_commit"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


class RunStore:
    """The folder of one run: its config, its finished chunks and tables, its summary."""

    def __init__(self, path: Path, config: Mapping[str, Any]):
        self.path = Path(path)
        self.config = dict(config)
        self.run_id = self.path.name

    # -- chunks: resumable units of work ----------------------------------------------------------------
    def chunk_path(self, key: str) -> Path:
        if not key or any(c in key for c in "/\\") or key.startswith("."):
            raise ValueError(f"invalid chunk key {key!r}")
        return self.path / "chunks" / f"{key}.parquet"

    def has_chunk(self, key: str) -> bool:
        return self.chunk_path(key).exists()

    def write_chunk(self, key: str, frame: pd.DataFrame) -> None:
        write_parquet_atomic(self.chunk_path(key), frame)

    def read_chunk(self, key: str) -> pd.DataFrame:
        return read_parquet(self.chunk_path(key))

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if not self.has_chunk(k)]

    # -- tables, JSON, completion --------------------------------------------------------------------------
    def write_table(self, name: str, frame: pd.DataFrame) -> None:
        write_parquet_atomic(self.path / "tables" / f"{name}.parquet", frame)

    def read_table(self, name: str) -> pd.DataFrame:
        path = self.path / "tables" / f"{name}.parquet"
        if not path.exists():
            raise BnlabError(f"run {self.path} has no table {name!r}")
        return read_parquet(path)

    def tables(self) -> dict[str, pd.DataFrame]:
        folder = self.path / "tables"
        return {p.stem: read_parquet(p) for p in sorted(folder.glob("*.parquet"))} if folder.exists() else {}

    def write_json(self, name: str, obj: Any) -> None:
        write_json_atomic(self.path / f"{name}.json", obj)

    def read_json(self, name: str) -> Any:
        path = self.path / f"{name}.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise BnlabError(f"run {self.path} has no {name}.json") from None
        except json.JSONDecodeError as exc:
            raise BnlabError(f"{path} is corrupt: {exc}") from None

    @property
    def complete(self) -> bool:
        return (self.path / _COMPLETE).exists()

    def mark_complete(self) -> None:
        write_text_atomic(self.path / _COMPLETE, "ok\n")

    def figures_dir(self) -> Path:
        folder = self.path / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        return folder


class ResultStore:
    """All runs under one root folder: ``ROOT/EXPERIMENT/RUN_ID``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def open(self, experiment: str, config: Mapping[str, Any], device: str | None = None) -> RunStore:
        """The run folder for this config, created (with config and environment) if new, reused if not.

        The identity covers the experiment, its config and ``RESULTS_VERSION``: bump that when a code change
        alters what a config computes, so that stored results of the old code are not silently reused.
        """
        run_id = config_hash({"experiment": experiment, "results_version": RESULTS_VERSION, **config})
        path = self.root / experiment / run_id
        config_file = path / "config.json"
        if config_file.exists():
            stored = json.loads(config_file.read_text())
            if canonical_json(stored) != canonical_json(dict(config)):
                raise BnlabError(f"{path} holds a different config than its hash says; remove that folder")
        else:
            write_json_atomic(config_file, dict(config))
        if not (path / "environment.json").exists():
            write_json_atomic(path / "environment.json", environment(device))
        return RunStore(path, config)

    def runs(self, experiment: str | None = None) -> list[RunStore]:
        """Every stored run (optionally of one experiment), oldest first."""
        pattern = f"{experiment}/*/config.json" if experiment else "*/*/config.json"
        found = sorted(self.root.glob(pattern), key=lambda p: p.stat().st_mtime)
        return [RunStore(p.parent, json.loads(p.read_text())) for p in found]
