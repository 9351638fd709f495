"""Sweeps: identities of runs and chunks, the content-addressed result store, executors for chunks of work."""

from concurrent.futures import Executor

from bnlab.sweep.executors import LocalExecutor, RayExecutor, make_executor
from bnlab.sweep.keys import NOT_IDENTITY, RESULTS_VERSION, chunk_key, config_hash
from bnlab.sweep.runner import run_chunks
from bnlab.sweep.store import ChunkPool, PlanReady, ResultStore, RunStore

__all__ = [
    "NOT_IDENTITY",
    "RESULTS_VERSION",
    "ChunkPool",
    "Executor",
    "LocalExecutor",
    "PlanReady",
    "RayExecutor",
    "ResultStore",
    "RunStore",
    "chunk_key",
    "config_hash",
    "make_executor",
    "run_chunks",
]
