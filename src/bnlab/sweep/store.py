"""The result store: a pool of content-addressed chunks, and one folder per run that lists the chunks it used.

Layout of a results folder ``ROOT``::

    chunks/KEY.parquet          every chunk of every run, stored once; KEY hashes the chunk's own spec
                                (bnlab.sweep.keys); the file's metadata holds that spec and its provenance
    chunks/.locks/KEY.lock      held while a process computes KEY (a second run waits, then reuses it)
    EXPERIMENT/RUN_ID/          RUN_ID hashes the experiment, its resolved config and RESULTS_VERSION
        config.json             the resolved config
        run.json                experiment, profile, times, wall time of the computing
        environment.json        what started the run (versions, device, git state); each chunk has its own
        manifest.json           the chunks of this run: label, key, computing function
        tables/NAME.parquet     tidy tables assembled from the chunks
        summary.json            the experiment's claims
        COMPLETE                marker: every chunk done and the tables written

A run folder is created at its first write (its first finished chunk), never before: a run that fails on its
input leaves nothing behind. Every file is written atomically (bnlab.sweep.files).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock, Timeout

from bnlab.errors import BnlabError
from bnlab.sweep.files import (
    ensure_dir,
    read_json,
    read_parquet,
    read_parquet_metadata,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)
from bnlab.sweep.keys import RESULTS_VERSION, canonical_json, config_hash
from bnlab.sweep.provenance import environment

_COMPLETE = "COMPLETE"
POOL = "chunks"


class PlanReady(Exception):
    """Raised by ``run_chunks`` on a planning store when chunks are missing: the run cannot go further without
    computing them, so the count stops there."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ChunkPool:
    """``ROOT/chunks``: one Parquet file per chunk key, shared by every run under ROOT."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def file(self, key: str) -> Path:
        if not key or any(c in key for c in "/\\") or key.startswith("."):
            raise ValueError(f"invalid chunk key {key!r}")
        return self.path / f"{key}.parquet"

    def has(self, key: str) -> bool:
        return self.file(key).exists()

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [k for k in dict.fromkeys(keys) if not self.has(k)]

    def write(self, key: str, frame: pd.DataFrame, metadata: Mapping[str, Any]) -> None:
        write_parquet_atomic(self.file(key), frame, dict(metadata))

    def read(self, key: str) -> pd.DataFrame:
        return read_parquet(self.file(key))

    def provenance(self, key: str) -> dict[str, Any]:
        """The chunk's metadata: ``fn``, ``spec``, ``environment`` (device, host, versions, git), ``seconds``."""
        return read_parquet_metadata(self.file(key))

    def acquire(self, key: str, blocking: bool) -> FileLock | None:
        """Hold the inter-process lock for computing ``key`` (the OS frees it if its holder dies), or None if
        another process holds it and ``blocking`` is False."""
        lock = FileLock(str(self.path / f".{key}.lock"))
        for _ in range(3):  # the pool folder may be removed by a failing run between ensure_dir and the open
            ensure_dir(self.path)
            try:
                lock.acquire(timeout=-1 if blocking else 0)
                return lock
            except Timeout:
                return None
            except FileNotFoundError:
                continue
        raise BnlabError(f"cannot create a lock in {self.path}")

    def release(self, lock: FileLock) -> None:
        """Remove the lock file while holding it (a peer waiting on it retries on the new path), then release."""
        Path(lock.lock_file).unlink(missing_ok=True)
        lock.release()

    def tidy(self) -> None:
        """Remove the pool folder if a failed run left it empty."""
        try:
            self.path.rmdir()
        except OSError:
            pass


class RunStore:
    """The folder of one run: its config, the manifest of its chunks, its tables and summary.

    ``planning`` stores (``ResultStore.plan``) only read: they count what a run would compute (``--dry-run``).
    """

    def __init__(
        self,
        path: Path,
        config: Mapping[str, Any],
        pool: ChunkPool | None = None,
        meta: Mapping[str, Any] | None = None,
        device: str | None = None,
        planning: bool = False,
    ):
        self.path = Path(path)
        self.config = dict(config)
        self.run_id = self.path.name
        self.pool = pool or ChunkPool(self.path.parent.parent / POOL)
        self.meta = dict(meta or {})
        self.device = device or "cpu"
        self.planning = planning
        self.plan: list[tuple[int, int]] = []  # (chunks, stored) per run_chunks call, when planning
        self.computed: list[str] = []  # chunk keys this process computed and wrote

    # -- the folder itself ------------------------------------------------------------------------------
    @property
    def exists(self) -> bool:
        return (self.path / "config.json").exists()

    def materialise(self) -> bool:
        """Create the folder with its config, run record and environment (once, at the run's first write).

        False on a planning store, which writes nothing (so a planned run goes on to count its later stages)."""
        if self.planning:
            return False
        if self.exists:
            return True
        write_json_atomic(self.path / "environment.json", environment(self.device))
        write_json_atomic(self.path / "run.json", {"created": _now(), **self.meta})
        write_json_atomic(self.path / "config.json", self.config)  # last: its presence marks the folder a run
        return True

    def record(self, **fields: Any) -> None:
        """Update ``run.json`` (status, wall time, profile)."""
        if not self.materialise():
            return
        current = read_json(self.path / "run.json") if (self.path / "run.json").exists() else {}
        write_json_atomic(self.path / "run.json", {**current, **fields, "updated": _now()})

    def read_run(self) -> dict[str, Any]:
        path = self.path / "run.json"
        return read_json(path) if path.exists() else {}

    # -- chunks: in the shared pool; the run keeps a manifest -------------------------------------------
    def add_to_manifest(self, entries: Iterable[Mapping[str, str]]) -> None:
        if not self.materialise():
            return
        listed = self.manifest()
        known = {e["key"] for e in listed}
        new = [dict(e) for e in entries if e["key"] not in known]
        if new:
            write_json_atomic(self.path / "manifest.json", {"chunks": listed + new})

    def manifest(self) -> list[dict[str, str]]:
        path = self.path / "manifest.json"
        return read_json(path)["chunks"] if path.exists() else []

    # -- tables, JSON, completion --------------------------------------------------------------------------
    def write_table(self, name: str, frame: pd.DataFrame) -> None:
        if self.materialise():
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
        if self.materialise():
            write_json_atomic(self.path / f"{name}.json", obj)

    def read_json(self, name: str) -> Any:
        path = self.path / f"{name}.json"
        if not path.exists():
            raise BnlabError(f"run {self.path} has no {name}.json")
        return read_json(path)

    @property
    def complete(self) -> bool:
        return (self.path / _COMPLETE).exists()

    def mark_complete(self) -> None:
        if self.materialise():
            write_text_atomic(self.path / _COMPLETE, "ok\n")

    def figures_dir(self) -> Path:
        self.materialise()
        folder = self.path / "figures"
        ensure_dir(folder)
        return folder


class ResultStore:
    """All runs under one root folder: ``ROOT/EXPERIMENT/RUN_ID``, and their shared chunk pool ``ROOT/chunks``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.pool = ChunkPool(self.root / POOL)

    def run_id(self, experiment: str, config: Mapping[str, Any]) -> str:
        """The run identity: the experiment, its config and ``RESULTS_VERSION`` (bump that when a code change
        alters what a config computes, so that stored results of the old code are not silently reused)."""
        return config_hash({"experiment": experiment, "results_version": RESULTS_VERSION, **config})

    def open(
        self, experiment: str, config: Mapping[str, Any], device: str | None = None, profile: str | None = None
    ) -> RunStore:
        """The run folder for this config: reused if it exists, else created at the run's first write."""
        path = self.root / experiment / self.run_id(experiment, config)
        if (path / "config.json").exists():
            stored = read_json(path / "config.json")
            if canonical_json(stored) != canonical_json(dict(config)):
                raise BnlabError(f"{path} holds a different config than its hash says; remove that folder")
        meta = {"experiment": experiment, "profile": profile}
        return RunStore(path, config, self.pool, meta=meta, device=device)

    def plan(self, experiment: str, config: Mapping[str, Any]) -> RunStore:
        """A read-only view of the run ``open`` would give, for counting what it would compute."""
        path = self.root / experiment / self.run_id(experiment, config)
        return RunStore(path, config, self.pool, planning=True)

    def runs(self, experiment: str | None = None) -> list[RunStore]:
        """Every stored run (optionally of one experiment), oldest first."""
        pattern = f"{experiment}/*/config.json" if experiment else "*/*/config.json"
        found = sorted(self.root.glob(pattern), key=lambda p: p.stat().st_mtime)
        return [RunStore(p.parent, read_json(p), self.pool) for p in found]

    def find(self, run_id: str) -> RunStore:
        """The run whose id is ``run_id`` or starts with it (unambiguously)."""
        matches = [r for r in self.runs() if r.run_id.startswith(run_id)] if run_id else []
        if len(matches) != 1:
            what = "no run" if not matches else f"{len(matches)} runs"
            raise BnlabError(f"{what} under {self.root} with id {run_id!r} (see 'bnlab ls {self.root}')")
        return matches[0]
