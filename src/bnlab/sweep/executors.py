"""Executors: how the missing chunks of a run are computed.

Each chunk is itself a vectorised batch (hundreds to thousands of runs in one array computation); an executor
only decides where whole chunks run. ``LocalExecutor`` runs them in this process, one after another (the
default, and the fastest on one machine since each chunk already uses every core). ``RayExecutor`` sends them
to a Ray cluster (``pip install bnlab[ray]``) when one machine is not enough. Whatever the executor, the
results come back to this process, which writes each chunk atomically as soon as it arrives: an interrupted
sweep keeps every finished chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import pandas as pd

from bnlab.errors import BnlabError

ChunkFn = Callable[[Any], pd.DataFrame]


class Executor(Protocol):
    def map(self, fn: ChunkFn, items: Sequence[Any]) -> Iterator[tuple[int, pd.DataFrame]]:
        """Yield ``(index, frame)`` for each item as it finishes, in any order."""


class LocalExecutor:
    """In-process, sequential over chunks (each chunk vectorised)."""

    def map(self, fn: ChunkFn, items: Sequence[Any]) -> Iterator[tuple[int, pd.DataFrame]]:
        for i, item in enumerate(items):
            yield i, fn(item)


class RayExecutor:
    """Chunks as Ray tasks on an existing cluster (``address``) or a local one started on demand."""

    def __init__(self, address: str | None = None, num_cpus_per_task: float = 1.0, num_gpus_per_task: float = 0.0):
        try:
            import ray
        except ImportError:
            raise BnlabError("the ray executor needs Ray: pip install 'bnlab[ray]'") from None
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        self._options = {"num_cpus": num_cpus_per_task, "num_gpus": num_gpus_per_task}

    def map(self, fn: ChunkFn, items: Sequence[Any]) -> Iterator[tuple[int, pd.DataFrame]]:
        ray = self._ray
        task = ray.remote(**self._options)(fn)
        pending = {task.remote(item): i for i, item in enumerate(items)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            yield pending.pop(ref), ray.get(ref)


def make_executor(name: str, address: str | None = None) -> Executor:
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address)
    raise BnlabError(f"unknown executor {name!r} (choose 'local' or 'ray')")
