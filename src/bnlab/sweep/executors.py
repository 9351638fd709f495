"""Executors: where the missing chunks of a run are computed, behind the ``concurrent.futures`` interface.

Each chunk is itself a vectorised batch (hundreds to thousands of runs in one array computation); an executor
only decides where whole chunks run. Any ``concurrent.futures.Executor`` works:

- ``LocalExecutor`` (the default) runs each chunk in this process as it is submitted, one after another: the
  fastest on one machine, since each chunk already uses every core;
- ``concurrent.futures.ProcessPoolExecutor`` runs chunks in worker processes (``--executor process``);
- ``RayExecutor`` sends them to a Ray cluster (``pip install 'bnlab[ray]'``, ``--executor ray``), with the
  workers' output shown here; Ray retries a chunk whose worker died.

Whatever the executor, results come back to this process, which writes each chunk as soon as it arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any

from bnlab.errors import BnlabError

EXECUTORS = ("local", "process", "ray")


class LocalExecutor(Executor):
    """In-process and sequential: ``submit`` computes at once and returns a finished future."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - handed to the caller through the future, like any executor
            future.set_exception(exc)
        return future


class RayExecutor(Executor):
    """Chunks as Ray tasks on an existing cluster (``address``) or a local one started on demand.

    A task whose worker dies is retried by Ray (``max_retries``); the driver writes each chunk once, when its
    first result arrives.
    """

    def __init__(
        self,
        address: str | None = None,
        num_cpus_per_task: float = 1.0,
        num_gpus_per_task: float = 0.0,
        max_retries: int = 3,
        **init_kwargs: Any,
    ):
        try:
            import ray
        except ImportError:
            raise BnlabError("the ray executor needs Ray: pip install 'bnlab[ray]'") from None
        self._ray = ray
        if not ray.is_initialized():
            try:
                ray.init(address=address, log_to_driver=True, **init_kwargs)
            except ConnectionError as exc:
                raise BnlabError(f"cannot reach the Ray cluster at {address}: {exc}") from None
        self._options = {"num_cpus": num_cpus_per_task, "num_gpus": num_gpus_per_task, "max_retries": max_retries}
        self._tasks: dict[Callable[..., Any], Any] = {}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        if fn not in self._tasks:
            self._tasks[fn] = self._ray.remote(**self._options)(fn)
        return self._tasks[fn].remote(*args, **kwargs).future()


def make_executor(name: str, address: str | None = None, workers: int | None = None) -> Executor:
    """``local`` (in-process), ``process`` (a pool of ``workers`` processes) or ``ray`` (at ``address``)."""
    if name == "local":
        return LocalExecutor()
    if name == "process":
        return ProcessPoolExecutor(max_workers=workers)
    if name == "ray":
        return RayExecutor(address)
    raise BnlabError(f"unknown executor {name!r} (choose from {', '.join(EXECUTORS)})")
