"""Identities: of a run (its resolved config) and of a chunk (its own spec and the function computing it).

A chunk's key is ``sha256(canonical JSON of {fn, spec minus NOT_IDENTITY, RESULTS_VERSION})``. Two runs whose
grids share a chunk share its key, so the pool of a results folder stores it once, and growing a sweep (more
seeds, a wider grid) or rerunning a sub-grid computes only the chunks not stored yet.

The contract for a chunk spec (what an experiment passes to :func:`bnlab.sweep.run_chunks`):

- it holds what determines the chunk's numbers (JSON values: numbers, strings, lists, dicts);
- keys in ``NOT_IDENTITY`` (where or how fast it computes: ``device``, ``compile``, ``data_dir``) may appear at any
  depth and are left out of the key;
- a spec with a ``seed`` at its top level or in its top-level ``point`` mapping is the work of that one seed, so
  the number of seeds (``seeds``, at any depth, e.g. inside the config) is left out of its key: ``seeds=2 -> 4``
  reuses seeds 0 and 1. A chunk that is not per seed and depends on ``seeds`` must not carry such a ``seed``;
- pydantic models (a config object) count as their JSON dump, numpy values as their exact values;
- the function is named by module and qualified name; a ``functools.partial`` by its function and arguments.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

# Bump when a change to the code changes the numbers a spec produces: stored chunks of the old code are then
# not reused (their keys differ).
RESULTS_VERSION = 2
# Where or how fast a chunk computes, not what: never part of a key.
NOT_IDENTITY = frozenset({"device", "compile", "data_dir"})
# Sizes of the grid rather than a point in it: left out of a per-seed chunk's key.
GRID_SIZE = frozenset({"seeds"})
KEY_LENGTH = 20


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy scalar or array: its exact values, not str()
        return obj.tolist()
    if hasattr(obj, "model_dump"):  # a pydantic config
        return obj.model_dump(mode="json")
    raise TypeError(f"a chunk spec must be JSON values or configs, not {type(obj).__name__}")


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace): equal configs give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def config_hash(config: Mapping[str, Any], length: int = 12) -> str:
    """The first ``length`` hex digits of SHA-256 of the canonical JSON of ``config``."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:length]


def _without(obj: Any, drop: frozenset[str]) -> Any:
    if isinstance(obj, Mapping):
        return {k: _without(v, drop) for k, v in obj.items() if k not in drop}
    if isinstance(obj, (list, tuple)):
        return [_without(v, drop) for v in obj]
    return obj


def function_name(fn: Callable[..., Any]) -> str:
    """``module.qualname`` (a partial: ``module.qualname(args...)``): how a chunk's function is named in its key
    and its metadata."""
    if isinstance(fn, partial):
        args = [function_name(a) if callable(a) else canonical_json(a) for a in fn.args]
        args += [
            f"{k}={function_name(v) if callable(v) else canonical_json(v)}" for k, v in sorted(fn.keywords.items())
        ]
        return f"{function_name(fn.func)}({', '.join(args)})"
    return f"{fn.__module__}.{fn.__qualname__}"


def _per_seed(spec: Mapping[str, Any]) -> bool:
    point = spec.get("point")
    return "seed" in spec or (isinstance(point, Mapping) and "seed" in point)


def chunk_identity(fn: Callable[..., Any], spec: Any) -> dict[str, Any]:
    """What a chunk's key hashes: the computing function's name, the spec's identity fields, the results version."""
    plain = json.loads(canonical_json(spec))  # configs and numpy values as plain JSON values
    drop = NOT_IDENTITY | GRID_SIZE if isinstance(plain, Mapping) and _per_seed(plain) else NOT_IDENTITY
    return {"fn": function_name(fn), "spec": _without(plain, drop), "results_version": RESULTS_VERSION}


def chunk_key(fn: Callable[..., Any], spec: Any) -> str:
    return config_hash(chunk_identity(fn, spec), KEY_LENGTH)
