"""Browse and query a results folder: every run in it, and one tidy table over all runs of an experiment.

>>> import bnlab.results
>>> bnlab.results.runs("bnlab-out")                      # one row per run: experiment, profile, status, ...
>>> df = bnlab.results.open("bnlab-out", "rate")         # the experiment's table over all its complete runs
>>> df.groupby(["kappa", "method"]).exponent_rel_error.max()

The stored files are plain Parquet, so DuckDB or pandas read them as they lie: a run's tables are
``OUT/EXPERIMENT/RUN_ID/tables/NAME.parquet``, its resolved config ``OUT/EXPERIMENT/RUN_ID/config.json``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pandas as pd

from bnlab.errors import BnlabError
from bnlab.sweep import ResultStore, RunStore

_RUN_COLUMNS = [
    "run_id",
    "experiment",
    "profile",
    "status",
    "claims",
    "wall_s",
    "cpu_s",
    "chunks",
    "devices",
    "created",
]


def _store(out: str | os.PathLike) -> ResultStore:
    store = ResultStore(out)
    if not store.root.is_dir():
        raise BnlabError(f"no results folder at {store.root}")
    return store


def _hashable(value: Any) -> Any:
    """Lists (grids in a config) as tuples, so config columns can be grouped on and compared."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def differing(configs: list[Mapping[str, Any]]) -> list[str]:
    """The config keys whose values are not the same in every one of ``configs`` (in first-seen order)."""
    keys = list(dict.fromkeys(k for c in configs for k in c))
    return [k for k in keys if len({repr(_hashable(c.get(k))) for c in configs}) > 1]


def _claims(run: RunStore) -> str:
    if not (run.path / "summary.json").exists():
        return "-"
    claims = run.read_json("summary").get("claims", [])
    return f"{sum(bool(c.get('holds')) for c in claims)}/{len(claims)}"


def _devices(run: RunStore) -> str:
    devices = set()
    for entry in run.manifest():
        if run.pool.has(entry["key"]):
            devices.add(run.pool.provenance(entry["key"]).get("environment", {}).get("device", "?"))
    return ",".join(sorted(devices)) or "-"


def runs(out: str | os.PathLike, experiment: str | None = None) -> pd.DataFrame:
    """One row per run under ``out`` (oldest first): its id, experiment, profile, status (complete or
    incomplete), claims held/total, compute wall and CPU time, chunks, the devices its chunks were computed on, and a
    ``config`` column (the resolved config as a dict)."""
    rows = []
    for run in _store(out).runs(experiment):
        meta = run.read_run()
        rows.append(
            {
                "run_id": run.run_id,
                "experiment": run.path.parent.name,
                "profile": meta.get("profile") or "-",
                "status": "complete" if run.complete else "incomplete",
                "claims": _claims(run),
                "wall_s": meta.get("wall_s"),
                "cpu_s": meta.get("cpu_s"),
                "chunks": len(run.manifest()),
                "devices": _devices(run),
                "created": meta.get("created"),
                "config": run.config,
            }
        )
    return pd.DataFrame(rows, columns=[*_RUN_COLUMNS, "config"])


def open(  # read as bnlab.results.open
    out: str | os.PathLike, experiment: str, table: str | None = None, complete_only: bool = True
) -> pd.DataFrame:
    """One tidy DataFrame: ``table`` of every (complete) run of ``experiment`` under ``out``, with ``run_id`` and
    each config value as a column (a config key that is also a table column is named ``config.KEY``).

    ``table`` may be left out when the experiment writes only one.
    """
    store = _store(out)
    chosen = [r for r in store.runs(experiment) if r.complete or not complete_only]
    if not chosen:
        raise BnlabError(f"no {'complete ' if complete_only else ''}runs of {experiment!r} under {store.root}")
    names = sorted({p.stem for r in chosen for p in (r.path / "tables").glob("*.parquet")})
    if table is None:
        if len(names) != 1:
            raise BnlabError(f"{experiment} has tables {', '.join(names)}: say which with table=...")
        table = names[0]
    elif table not in names:
        raise BnlabError(f"{experiment} has no table {table!r} (it has {', '.join(names) or 'none'})")
    frames = []
    for run in chosen:
        if not (run.path / "tables" / f"{table}.parquet").exists():
            continue
        frame = run.read_table(table)
        config = {(f"config.{k}" if k in frame.columns else k): _hashable(v) for k, v in run.config.items()}
        frames.append(frame.assign(run_id=run.run_id, **{k: [v] * len(frame) for k, v in config.items()}))
    return pd.concat(frames, ignore_index=True)
