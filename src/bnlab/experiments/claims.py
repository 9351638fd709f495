"""Claims: one checkable statement each, a prediction beside its measurement, and whether it holds.

Every claim has a stable ``id`` (unique, defined in ``docs/claims.md``) by which tests and readers select it, and
a ``relation`` that says how ``measured`` is checked against ``predicted``:

- ``"~"`` (:func:`close_to`): ``|measured - predicted| <= max(atol, rtol |predicted|)``;
- ``">"`` / ``"<"`` (:func:`above`, :func:`below`): ``measured`` beyond the bound ``predicted``;
- ``">"`` with an interval (:func:`wider_than`): a per-seed difference whose seed-bootstrap confidence interval
  ``[ci_low, ci_high]`` lies wholly above the margin ``predicted``.

A control claim states its own expectation as ``predicted`` (a shift of 0, a deviation above 1), never the law
it expects to fail. Claims are built with keywords only; numbers are stored as plain Python floats.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

RELATIONS = ("~", ">", "<", ">=", "<=")
_ID = re.compile(r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$")


@dataclass(frozen=True, kw_only=True)
class Claim:
    """``predicted`` may be None for a plain observation (then ``measured`` carries the number it rests on)."""

    id: str
    claim: str
    quantity: str
    predicted: float | None
    measured: float | None
    holds: bool
    relation: str = "~"
    detail: str = ""
    ci_low: float | None = None
    ci_high: float | None = None

    def __post_init__(self) -> None:
        if not _ID.match(self.id):
            raise ValueError(f"claim id {self.id!r} is not lower-case words joined by '-' or '.'")
        if self.relation not in RELATIONS:
            raise ValueError(f"claim relation {self.relation!r} not in {RELATIONS}")
        for name in ("predicted", "measured", "ci_low", "ci_high"):
            object.__setattr__(self, name, _float(getattr(self, name)))
        object.__setattr__(self, "holds", bool(self.holds))

    @property
    def rel_error(self) -> float | None:
        """``|measured - predicted| / |predicted|`` for a claim of closeness; None for bounds and observations."""
        p, m = self.predicted, self.measured
        if self.relation != "~" or p is None or m is None or p == 0 or not (math.isfinite(p) and math.isfinite(m)):
            return None
        return abs(m - p) / abs(p)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rel_error": self.rel_error}


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def fmt(values: Iterable[Any]) -> str:
    """``[0.01, 1, 100]`` as ``"0.01, 1, 100"``: numbers with ``:g`` (never a numpy repr such as np.float64(1))."""
    return ", ".join(f"{float(v):g}" if _is_number(v) else str(v) for v in values)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def close_to(
    *,
    id: str,
    claim: str,
    quantity: str,
    predicted: float,
    measured: float,
    rtol: float = 0.0,
    atol: float = 0.0,
    detail: str = "",
    also: bool = True,
) -> Claim:
    """Holds when ``|measured - predicted| <= max(atol, rtol |predicted|)`` (and ``also``, a side condition
    the detail explains); a NaN measurement never holds."""
    gap = abs(float(measured) - float(predicted))
    allowed = max(atol, rtol * abs(float(predicted)))
    holds = bool(also and math.isfinite(gap) and gap <= allowed)
    return Claim(
        id=id, claim=claim, quantity=quantity, predicted=predicted, measured=measured, holds=holds, detail=detail
    )


def above(
    *, id: str, claim: str, quantity: str, measured: float, bound: float, detail: str = "", strict: bool = True
) -> Claim:
    """Holds when ``measured > bound`` (``>=`` unless ``strict``); ``predicted`` is the bound."""
    return _bound(
        ">" if strict else ">=", id=id, claim=claim, quantity=quantity, measured=measured, bound=bound, detail=detail
    )


def below(
    *, id: str, claim: str, quantity: str, measured: float, bound: float, detail: str = "", strict: bool = False
) -> Claim:
    """Holds when ``measured <= bound`` (``<`` if ``strict``); ``predicted`` is the bound."""
    return _bound(
        "<" if strict else "<=", id=id, claim=claim, quantity=quantity, measured=measured, bound=bound, detail=detail
    )


_COMPARE = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def _bound(relation: str, *, bound: float, measured: float, **text: str) -> Claim:
    m = float(measured)
    return Claim(predicted=bound, measured=m, holds=_COMPARE[relation](m, bound), relation=relation, **text)


def wider_than(
    *,
    id: str,
    claim: str,
    quantity: str,
    values: Sequence[float],
    baseline: Sequence[float],
    margin: float = 0.0,
    paired: bool = True,
    confidence: float = 0.95,
    detail: str = "",
) -> Claim:
    """``values`` exceed ``baseline`` by more than ``margin``, per seed: ``measured`` is the mean difference and
    ``[ci_low, ci_high]`` its ``confidence`` percentile interval from ``scipy.stats.bootstrap`` over seeds
    (paired differences when ``paired``, else the two samples resampled independently). It holds only when
    ``ci_low > margin``: the interval excludes the margin. A single seed gives a zero-width interval."""
    a, b = np.asarray(values, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    low, high = _bootstrap_difference(a, b, paired, confidence)
    measured = float(np.mean(a - b)) if paired else float(np.mean(a) - np.mean(b))
    n = f"{len(a)} seeds" if paired else f"{len(a)} and {len(b)} seeds"
    return Claim(
        id=id,
        claim=claim,
        quantity=quantity,
        predicted=margin,
        measured=measured,
        holds=bool(np.isfinite(low) and low > margin),
        relation=">",
        ci_low=low,
        ci_high=high,
        detail=(f"{detail}; " if detail else "")
        + f"{confidence:.0%} bootstrap interval over {n} [{low:.2f}, {high:.2f}], required above {margin:g}",
    )


def _bootstrap_difference(a: np.ndarray, b: np.ndarray, paired: bool, confidence: float) -> tuple[float, float]:
    if paired and a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan"), float("nan")
    if paired:
        diff = a - b
        if len(diff) < 2 or np.ptp(diff) == 0:
            return float(diff.min()), float(diff.max())
        data, statistic = (diff,), np.mean
    else:
        if min(len(a), len(b)) < 2:
            return float(a.mean() - b.mean()), float(a.mean() - b.mean())
        data, statistic = (a, b), _mean_difference
    res = stats.bootstrap(
        data,
        statistic,
        paired=False,
        vectorized=True,
        confidence_level=confidence,
        method="percentile",
        n_resamples=9999,
        random_state=np.random.default_rng(0),  # the same interval on every rebuild of the report
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)
