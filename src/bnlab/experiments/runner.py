"""Run a registered experiment end to end: resolve its config, compute (or reuse) its results, summarise, plot."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bnlab.device import resolve_device
from bnlab.errors import BnlabError
from bnlab.experiments.base import Claim, Experiment, RunContext, get
from bnlab.experiments.plotting import figure_style
from bnlab.sweep import Executor, LocalExecutor, PlanReady, ResultStore, RunStore


@dataclass
class Outcome:
    experiment: Experiment
    config: Any
    store: RunStore
    claims: list[Claim]
    figures: list[Path]
    reused: bool

    @property
    def holds(self) -> bool:
        return all(c.holds for c in self.claims)


@dataclass(frozen=True)
class Plan:
    """What ``run_experiment`` would do (``--dry-run``): the run's id, whether it is complete, and its chunks.

    ``partial``: a later stage of the run needs an earlier one's chunks, so it is counted once those are stored.
    """

    run_id: str
    path: Path
    complete: bool
    chunks: int
    stored: int
    partial: bool

    @property
    def to_compute(self) -> int:
        return self.chunks - self.stored


def resolve_config(name: str, profile: str = "quick", overrides=(), device: str | None = None) -> Any:
    """The validated config of ``name`` with its inputs checked (device, dataset files): nothing written yet."""
    config = get(name).resolve(profile, overrides)
    if device is not None:
        config = config.model_copy(update={"device": device})
    resolve_device(config.device)  # a clear error now rather than deep inside the run
    check_inputs(name, config)
    return config


def check_inputs(name: str, config: Any) -> None:
    """A config that reads a real dataset needs its files first: say which, and how to get them."""
    from bnlab.nn.data import missing_files

    dataset = getattr(config, "dataset", None)
    if dataset is None:
        return
    missing = missing_files(dataset, getattr(config, "data_dir", None))
    if missing:
        raise BnlabError(
            f"{name} needs {dataset} ({missing[0]} is missing): run 'bnlab data add {dataset} FOLDER' or "
            f"'bnlab data fetch {dataset}' first, or --set data_dir=FOLDER"
        )


def plan_experiment(
    name: str, out: str | Path, profile: str = "quick", overrides=(), device: str | None = None
) -> Plan:
    """Count the chunks a run of ``name`` would compute and those already stored, computing nothing."""
    experiment = get(name)
    config = resolve_config(name, profile, overrides, device)
    store = ResultStore(out).plan(name, config.identity())
    if store.complete:
        n = len(store.manifest())
        return Plan(store.run_id, store.path, True, n, n, False)
    try:
        experiment.run(config, RunContext(store=store, executor=LocalExecutor(), progress=False))
        partial = False
    except PlanReady:
        partial = True
    chunks, stored = sum(n for n, _ in store.plan), sum(s for _, s in store.plan)
    return Plan(store.run_id, store.path, False, chunks, stored, partial)


def run_experiment(
    name: str,
    out: str | Path,
    profile: str = "quick",
    overrides: Mapping[str, Any] | Sequence[str] = (),
    device: str | None = None,
    executor: Executor | None = None,
    progress: bool = True,
    figures: bool = True,
) -> Outcome:
    """Compute ``name`` under ``out`` (reusing a complete stored run of the same config, and every stored chunk),
    then summarise and (unless ``figures`` is False) plot it from the stored tables."""
    experiment = get(name)
    config = resolve_config(name, profile, overrides, device)
    store = ResultStore(out).open(name, config.identity(), device=config.device, profile=profile)
    reused = store.complete
    if not reused:
        before = store.read_run() if store.exists else {}
        start, cpu_start = time.perf_counter(), time.process_time()
        threads = torch.get_num_threads()
        try:
            experiment.run(config, RunContext(store=store, executor=executor or LocalExecutor(), progress=progress))
            store.mark_complete()
        finally:  # an interrupted run keeps its wall time and count too (only if its folder exists)
            # numba's OpenMP pool shares torch's libgomp and sets the process's OpenMP thread count to its own
            # (every core) when it starts: without this, every experiment after a least-squares one ran torch
            # with 2 threads whatever OMP_NUM_THREADS said, and on a loaded 2-core machine the second thread's
            # barrier spinning took half the CPU time (measured 2026-11-26: 160 of 330 s in one reproduce).
            torch.set_num_threads(threads)
            if store.exists:
                store.record(
                    wall_s=round(before.get("wall_s", 0.0) + time.perf_counter() - start, 3),
                    # user + system time of this process, every thread: on a shared machine the wall time
                    # grows with the other jobs' load, the CPU time much less.
                    cpu_s=round(before.get("cpu_s", 0.0) + time.process_time() - cpu_start, 3),
                    computed=before.get("computed", 0) + len(store.computed),
                    profile=profile,
                )
    return finish(experiment, config, store, reused, figures)


def finish(experiment: Experiment, config: Any, store: RunStore, reused: bool = True, figures: bool = True) -> Outcome:
    """Summarise and plot a complete stored run (what ``bnlab report`` does for every run); ``figures=False``
    leaves the figures out (the family matrix: 384 runs, whose plots cost seconds each on two cores)."""
    tables = store.tables()
    claims = experiment.summarise(config, tables)
    store.write_json(
        "summary",
        {
            "experiment": experiment.name,
            "row": experiment.row,
            "facts": list(experiment.facts),
            "run_id": store.run_id,
            "holds": all(c.holds for c in claims),
            "claims": [c.to_dict() for c in claims],
        },
    )
    paths = []
    if figures:
        with figure_style():
            paths = experiment.plot(config, tables, store.figures_dir())
    return Outcome(experiment, config, store, claims, paths, reused)


def load_outcome(store: RunStore) -> Outcome:
    """Rebuild the outcome of a stored complete run from its folder alone."""
    experiment = get(store.path.parent.name)
    config = experiment.config(**store.config)
    return finish(experiment, config, store)
