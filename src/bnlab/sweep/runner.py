"""Compute the missing chunks of a run with a progress bar, writing each one to the pool as soon as it is done.

Each chunk is computed by at most one process at a time: its key's file lock is held from submission until the
chunk is written. A second run over the same chunks (started alongside, or after a crash) skips what is stored,
computes what nobody holds, then waits for the chunks held by others and reuses them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from typing import Any

import pandas as pd
from filelock import FileLock
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bnlab.errors import BnlabError
from bnlab.sweep.executors import LocalExecutor
from bnlab.sweep.keys import RESULTS_VERSION, chunk_key, function_name
from bnlab.sweep.provenance import environment
from bnlab.sweep.store import PlanReady, RunStore


def _compute(fn: Callable[[Any], pd.DataFrame], spec: Any, device: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Run one chunk where the executor put it, and say where and how long (module-level: executors pickle it)."""
    start = time.perf_counter()
    frame = fn(spec)
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{function_name(fn)} returned {type(frame).__name__}, not a DataFrame")
    return frame, {"environment": environment(device), "seconds": round(time.perf_counter() - start, 3)}


def run_chunks(
    store: RunStore,
    chunks: Mapping[str, Any],
    compute: Callable[[Any], pd.DataFrame],
    executor: Executor | None = None,
    progress: bool = True,
    label: str = "",
) -> pd.DataFrame:
    """Ensure every chunk ``label -> spec`` is stored (computing ``compute(spec)`` for the missing ones), and
    return all chunks concatenated with a ``chunk`` column (the label), in the order of ``chunks``.

    A chunk is stored under the key of ``(compute, spec)`` (see :mod:`bnlab.sweep.keys` for what a spec must
    hold); the run's manifest lists the keys. ``compute`` must be a module-level function (executors may pickle
    it to other processes). On a planning store (``--dry-run``) this only counts: it raises ``PlanReady`` if a
    chunk would have to be computed.
    """
    if not chunks:
        raise BnlabError("the grid is empty: nothing to compute (is a list in the config empty?)")
    keys = {name: chunk_key(compute, spec) for name, spec in chunks.items()}
    specs = {keys[name]: spec for name, spec in chunks.items()}
    entries = [{"label": name, "key": key, "fn": function_name(compute)} for name, key in keys.items()]
    missing = store.pool.missing(specs)
    if store.planning:
        store.plan.append((len(specs), len(specs) - len(missing)))
        if missing:
            raise PlanReady
    elif missing:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            disable=not progress,
            transient=True,
        ) as bar:
            task = bar.add_task(label or store.path.parent.name, total=len(specs), completed=len(specs) - len(missing))

            def stored(key: str) -> None:
                bar.advance(task)
                if not store.exists:  # the run folder appears with its first chunk
                    store.add_to_manifest(entries)

            _compute_missing(store, missing, specs, compute, executor or LocalExecutor(), stored)
    if not store.planning:
        store.add_to_manifest(entries)
    frames = [store.pool.read(key).assign(chunk=name) for name, key in keys.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _compute_missing(
    store: RunStore,
    missing: list[str],
    specs: Mapping[str, Any],
    compute: Callable[[Any], pd.DataFrame],
    executor: Executor,
    stored: Callable[[str], None],
) -> None:
    pool = store.pool
    held: dict[str, FileLock] = {}  # locks this process holds, released whatever happens
    pending: dict[Future, str] = {}

    def finish(future: Future) -> None:
        key = pending.pop(future)
        try:
            frame, provenance = future.result()
            # the run folder appears before its first chunk is written: interrupted between the two, the run
            # still has its record (a chunk written first could land in the pool with no run folder to show it)
            store.materialise()
            meta = {"key": key, "fn": function_name(compute), "spec": specs[key]}
            pool.write(key, frame, {**meta, **provenance, "results_version": RESULTS_VERSION})
            store.computed.append(key)
        finally:
            pool.release(held.pop(key))
        stored(key)

    def submit(key: str, lock: FileLock) -> None:
        held[key] = lock
        if pool.has(key):  # written by another process since we looked
            pool.release(held.pop(key))
            stored(key)
            return
        pending[executor.submit(_compute, compute, specs[key], store.device)] = key
        for future in [f for f in pending if f.done()]:  # the in-process executor finishes on submit
            finish(future)

    held_elsewhere = []
    try:
        for key in missing:
            lock = pool.acquire(key, blocking=False)
            if lock is None:
                held_elsewhere.append(key)  # another process is computing it: come back once ours are done
            else:
                submit(key, lock)
        while pending:
            for future in wait(pending, return_when=FIRST_COMPLETED).done:
                finish(future)
        for key in held_elsewhere:  # the lock returns when the other process wrote the chunk, or died
            submit(key, pool.acquire(key, blocking=True))
            while pending:
                finish(next(iter(wait(pending).done)))
    finally:
        for future in pending:
            future.cancel()
        for lock in held.values():
            pool.release(lock)
        pool.tidy()
