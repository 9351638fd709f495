"""What an experiment is: a typed config with profiles, a computation into the store, claims, figures.

An experiment module defines a config class (a :class:`ExperimentConfig`), and registers an
:class:`Experiment` whose three functions are

- ``run(config, ctx)``: compute, writing tidy tables with ``ctx.store`` (``ctx.per_chunk`` runs one resumable
  chunk per seed or per point of any grid); it never plots;
- ``summarise(config, tables) -> list[Claim]``: each prediction of the theory beside its measurement;
- ``plot(config, tables, folder) -> list[Path]``: figures, from the stored tables alone.

Summaries and figures read only the stored tables, so a report is rebuilt without re-running anything.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bnlab.errors import BnlabError
from bnlab.sweep import Executor, LocalExecutor, RunStore, run_chunks

PROFILES = ("quick", "paper")
# Fields that say where or how fast a run computes, not what it computes: left out of the run identity.
NOT_IDENTITY = frozenset({"device", "compile"})


class ExperimentConfig(BaseModel):
    """Base of every experiment's config: typed, immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = "cpu"

    def identity(self) -> dict[str, Any]:
        """The fields that define the result (hashed into the run id)."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in NOT_IDENTITY}


class SeedsConfig(ExperimentConfig):
    """Repeats: seed ``s`` draws the problem (or network); see each experiment for what it fixes."""

    seeds: int = Field(3, ge=1)


class EpsGridConfig(ExperimentConfig):
    """The learning rates: ``num_eps`` points geometrically spaced in ``[eps_min, eps_max]``."""

    eps_min: float = Field(1e-4, gt=0)
    eps_max: float = Field(1e8, gt=0)
    num_eps: int = Field(49, ge=3)

    @property
    def eps_grid(self) -> np.ndarray:
        return np.geomspace(self.eps_min, self.eps_max, self.num_eps)

    @property
    def eps_range(self) -> str:
        return f"eps in [{self.eps_min:g}, {self.eps_max:g}]"


@dataclass(frozen=True)
class Claim:  # legacy, replaced by bnlab.experiments.claims.Claim in the full refactor of issue 7
    """One checkable statement: a predicted value beside its measurement, and whether the claim holds.

    ``predicted`` may be None for a qualitative claim (then ``measured`` carries the number it rests on).
    """

    claim: str
    quantity: str
    predicted: float | None
    measured: float | None
    holds: bool
    detail: str = ""

    @property
    def rel_error(self) -> float | None:
        if self.predicted is None or self.measured is None or self.predicted == 0:
            return None
        if not (math.isfinite(self.predicted) and math.isfinite(self.measured)):
            return None
        return abs(self.measured - self.predicted) / abs(self.predicted)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rel_error": self.rel_error}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Claim:
        return cls(**{k: data[k] for k in ("claim", "quantity", "predicted", "measured", "holds", "detail")})


@dataclass
class RunContext:
    """What ``Experiment.run`` gets besides its config."""

    store: RunStore
    executor: Executor = field(default_factory=LocalExecutor)
    progress: bool = True

    def per_chunk(
        self, config: ExperimentConfig, compute: Callable[..., pd.DataFrame], label: str = "", **axes: Iterable[Any]
    ) -> pd.DataFrame:
        """``compute(config, **point)`` for every point of the product of ``axes`` (e.g. ``seed=range(3)``), one
        resumable chunk each through the store, concatenated with the point's values as columns.

        ``compute`` must be module-level (executors may pickle it); it gets the validated config object itself.
        """
        names = list(axes)
        points = [dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values())]
        chunks = {"-".join(f"{k}{v}" for k, v in p.items()) or "all": {"config": config, "point": p} for p in points}
        label = label or self.store.path.parent.name
        return run_chunks(self.store, chunks, partial(_compute_point, compute), self.executor, self.progress, label)


def _compute_point(compute: Callable[..., pd.DataFrame], spec: Mapping[str, Any]) -> pd.DataFrame:
    return compute(spec["config"], **spec["point"]).assign(**spec["point"])


Tables = Mapping[str, pd.DataFrame]


@dataclass(frozen=True)
class Experiment:
    name: str
    purpose: str
    row: str  # the paper's summary-table row (or section) this experiment speaks to
    facts: tuple[str, ...]  # facts / observations it reproduces, e.g. ("F1", "O1"), defined in docs/claims.md
    config: type[ExperimentConfig]
    run: Callable[[Any, RunContext], None]
    summarise: Callable[[Any, Tables], list[Claim]]
    plot: Callable[[Any, Tables, Path], list[Path]]
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def resolve(self, profile: str = "quick", overrides: Mapping[str, Any] | Sequence[str] = ()) -> Any:
        """The validated config: class defaults, then the profile's values, then the overrides."""
        if profile not in PROFILES:
            raise BnlabError(f"unknown profile {profile!r} (choose from {', '.join(PROFILES)})")
        values = dict(self.profiles.get(profile, {}))
        values.update(parse_overrides(overrides) if not isinstance(overrides, Mapping) else overrides)
        try:
            return self.config(**values)
        except ValidationError as exc:
            raise BnlabError(f"invalid config for {self.name}: {_one_line(exc)}") from None


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["steps=100", "eps_a=[1, 0.5]", "spacing=log"]`` -> dict; values are JSON where they parse, else text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise BnlabError(f"override {item!r} is not of the form key=value")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "config"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


REGISTRY: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    if experiment.name in REGISTRY:
        raise ValueError(f"experiment {experiment.name!r} registered twice")
    REGISTRY[experiment.name] = experiment
    return experiment


def get(name: str) -> Experiment:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY)) or "none"
        raise BnlabError(f"unknown experiment {name!r} (known: {known})") from None
