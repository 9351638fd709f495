"""Sweeps: run identity, the result store, and executors for chunks of vectorised work."""

from bnlab.sweep.executors import Executor, LocalExecutor, RayExecutor, make_executor
from bnlab.sweep.runner import run_chunks
from bnlab.sweep.store import ResultStore, RunStore, config_hash

__all__ = [
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "ResultStore",
    "RunStore",
    "config_hash",
    "make_executor",
    "run_chunks",
]
