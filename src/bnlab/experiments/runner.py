"""Run a registered experiment end to end: resolve its config, compute (or reuse) its results, summarise, plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnlab.device import resolve_device
from bnlab.experiments.base import Claim, Experiment, RunContext, get
from bnlab.experiments.plotting import figure_style
from bnlab.sweep import Executor, LocalExecutor, ResultStore, RunStore


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


def run_experiment(
    name: str,
    out: str | Path,
    profile: str = "quick",
    overrides: Mapping[str, Any] | Sequence[str] = (),
    device: str | None = None,
    executor: Executor | None = None,
    progress: bool = True,
) -> Outcome:
    """Compute ``name`` under ``out`` (reusing a complete stored run of the same config), then summarise and
    plot it from the stored tables."""
    experiment = get(name)
    config = experiment.resolve(profile, overrides)
    if device is not None:
        config = config.model_copy(update={"device": device})
    resolve_device(config.device)  # a clear error now rather than deep inside the run
    store = ResultStore(out).open(name, config.identity(), device=config.device)
    reused = store.complete
    if not reused:
        experiment.run(config, RunContext(store=store, executor=executor or LocalExecutor(), progress=progress))
        store.mark_complete()
    return finish(experiment, config, store, reused)


def finish(experiment: Experiment, config: Any, store: RunStore, reused: bool = True) -> Outcome:
    """Summarise and plot a complete stored run (what ``bnlab report`` does for every run)."""
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
    with figure_style():
        figures = experiment.plot(config, tables, store.figures_dir())
    return Outcome(experiment, config, store, claims, figures, reused)


def load_outcome(store: RunStore) -> Outcome:
    """Rebuild the outcome of a stored complete run from its folder alone."""
    experiment = get(store.path.parent.name)
    config = experiment.config(**store.config)
    return finish(experiment, config, store)
