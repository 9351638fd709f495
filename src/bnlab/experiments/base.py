"""What an experiment is: a typed config with profiles, a computation into the store, claims, figures.

An experiment module reads top to bottom as: the claim (module docstring), the grid (a config class, a
:class:`ExperimentConfig` whose docstring's first line is the experiment's purpose and whose ``PROFILES`` are
its quick and paper values), the measurement and the prediction (chunk functions), the verdicts and the
figure; it registers an :class:`Experiment` whose three functions are

- ``run(config, ctx)``: compute, writing tidy tables with ``ctx.store`` (``ctx.per_chunk`` runs one resumable
  chunk per seed or per point of any grid); it never plots;
- ``summarise(config, tables) -> list[Claim]``: each prediction of the theory beside its measurement;
- ``plot(config, tables, folder) -> list[Path]``: figures, from the stored tables alone.

Summaries and figures read only the stored tables, so a report is rebuilt without re-running anything.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bnlab.errors import BnlabError
from bnlab.experiments.claims import Claim
from bnlab.sweep import Executor, LocalExecutor, RunStore, run_chunks

PROFILES = ("quick", "paper", "mnist")  # mnist: the network experiments on real MNIST in minutes
# Fields that say where or how fast a run computes, not what it computes: left out of the run identity.
NOT_IDENTITY = frozenset({"device", "compile"})
MAX_INT, MAX_SEEDS = 10**9, 10**4


class ExperimentConfig(BaseModel):
    """Base of every experiment's config: typed, immutable, unknown keys rejected."""

    # NaN and infinities are never a meaningful grid value (kappa=inf would leave invalid JSON behind).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    PROFILES: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    device: str = "cpu"

    @model_validator(mode="after")
    def _sane_values(self):
        """Every ``X_min``/``X_max`` pair of fields is a range (``X_min <= X_max``); integers are below
        ``MAX_INT`` and ``seeds`` (one chunk each) below ``MAX_SEEDS``: larger is a typo, not a sweep."""
        values = dict(self)
        for name, value in values.items():
            limit = MAX_SEEDS if name == "seeds" else MAX_INT
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > limit:
                raise ValueError(f"{name} = {value} is beyond {limit:.0e}")
        for name, low in values.items():
            high = values.get(f"{name[:-4]}_max") if name.endswith("_min") else None
            if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high:
                raise ValueError(f"{name} must be below {name[:-4]}_max (got {low:g} > {high:g})")
        return self

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
        name = getattr(compute, "func", compute).__name__.strip("_")  # names the lone chunk of a grid-free run
        chunks = {"-".join(f"{k}{v}" for k, v in p.items()) or name: {"config": config, "point": p} for p in points}
        label = label or self.store.path.parent.name
        return run_chunks(self.store, chunks, partial(_compute_point, compute), self.executor, self.progress, label)


def _compute_point(compute: Callable[..., pd.DataFrame], spec: Mapping[str, Any]) -> pd.DataFrame:
    return compute(spec["config"], **spec["point"]).assign(**spec["point"])


Tables = Mapping[str, pd.DataFrame]


@dataclass(frozen=True)
class Experiment:
    name: str
    row: str  # the paper's summary-table row (or section) this experiment speaks to
    facts: tuple[str, ...]  # facts / observations it reproduces, e.g. ("F1", "O1"), defined in docs/claims.md
    config: type[ExperimentConfig]
    run: Callable[[Any, RunContext], None]
    summarise: Callable[[Any, Tables], list[Claim]]
    plot: Callable[[Any, Tables, Path], list[Path]]
    # Optional: the row's verdict in words, from this experiment's claims (where "reproduced" needs a "where").
    row_note: Callable[[list[Claim]], str] | None = None

    @property
    def purpose(self) -> str:
        """The first paragraph of the config class's docstring, on one line."""
        doc = self.config.__doc__ or ""
        return " ".join(doc.strip().split("\n\n")[0].split()).rstrip(".")

    @property
    def profiles(self) -> Mapping[str, Mapping[str, Any]]:
        return self.config.PROFILES

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
