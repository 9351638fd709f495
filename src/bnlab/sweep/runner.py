"""Compute the missing chunks of a run with a progress bar, writing each one as soon as it is done."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bnlab.sweep.executors import Executor, LocalExecutor
from bnlab.sweep.store import RunStore


def run_chunks(
    store: RunStore,
    chunks: Mapping[str, Any],
    compute: Callable[[Any], pd.DataFrame],
    executor: Executor | None = None,
    progress: bool = True,
    label: str = "",
) -> pd.DataFrame:
    """Ensure every chunk ``key -> spec`` is stored (computing ``compute(spec)`` for the missing ones), and
    return all chunks concatenated with a ``chunk`` column, in the order of ``chunks``.

    ``compute`` must be a module-level function (executors may pickle it to other processes).
    """
    missing = store.missing(chunks)
    if missing:
        executor = executor or LocalExecutor()
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            disable=not progress,
            transient=True,
        ) as bar:
            task = bar.add_task(
                label or store.path.parent.name, total=len(chunks), completed=len(chunks) - len(missing)
            )
            for i, frame in executor.map(compute, [chunks[k] for k in missing]):
                store.write_chunk(missing[i], frame)
                bar.advance(task)
    frames = [store.read_chunk(k).assign(chunk=k) for k in chunks]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
