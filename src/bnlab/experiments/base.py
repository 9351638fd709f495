"""What an experiment is: a typed config with profiles, a computation into the store, claims, figures.

An experiment module defines a config class (a :class:`ExperimentConfig`), and registers an
:class:`Experiment` whose three functions are

- ``run(config, ctx)``: compute, writing tidy tables with ``ctx.store`` (use :func:`bnlab.sweep.run_chunks`
  for resumable chunks); it never plots;
- ``summarise(config, tables) -> list[Claim]``: each prediction of the theory beside its measurement;
- ``plot(config, tables, folder) -> list[Path]``: figures, from the stored tables alone.

Summaries and figures read only the stored tables, so a report is rebuilt without re-running anything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from bnlab.errors import BnlabError
from bnlab.sweep import Executor, LocalExecutor, RunStore

PROFILES = ("quick", "paper")
# Fields that say where or how fast a run computes, not what it computes: left out of the run identity.
NOT_IDENTITY = frozenset({"device", "compile"})
MAX_INT, MAX_SEEDS = 10**9, 10**4


class ExperimentConfig(BaseModel):
    """Base of every experiment's config: typed, immutable, unknown keys rejected."""

    # NaN and infinities are never a meaningful grid value (kappa=inf would leave invalid JSON behind).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

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


@dataclass(frozen=True)
class Claim:
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


Tables = Mapping[str, pd.DataFrame]


@dataclass(frozen=True)
class Experiment:
    name: str
    purpose: str
    row: str  # the paper's summary-table row (or section) this experiment speaks to
    facts: tuple[str, ...]  # SPEC facts / experiments it reproduces, e.g. ("F1", "O1")
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
