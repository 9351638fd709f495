"""Module-level chunk functions for the store tests (executors and subprocesses must import them by name)."""

import os
import time
from pathlib import Path

import pandas as pd


def square(spec):
    return pd.DataFrame({"x": [spec["x"]], "y": [spec["x"] ** 2]})


def logged(spec):
    """Append one line per computation to ``spec["log"]`` (O_APPEND: safe across processes), sleep
    ``$CHUNK_SLEEP`` seconds (outside the spec, so it does not change the chunk's key), return."""
    with open(spec["log"], "a") as fh:
        fh.write(f"{spec['seed']} {os.getpid()}\n")
    if os.environ.get("CHUNK_PIDS"):  # say which process computes which chunk (for a test that kills one)
        (Path(os.environ["CHUNK_PIDS"]) / f"{spec['seed']}.pid").write_text(str(os.getpid()))
    time.sleep(float(os.environ.get("CHUNK_SLEEP", "0")))
    return pd.DataFrame({"seed": [spec["seed"]], "value": [spec["seed"] * 10.0]})


def per_point(compute, spec):
    """The shape of a per-point chunk as an experiment base may build it: ``{"config": model, "point": {...}}``."""
    return compute(spec["config"], **spec["point"]).assign(**spec["point"])


def scaled(config, seed):
    return pd.DataFrame({"value": [config.scale * seed]})


def shifted(config, seed):
    return pd.DataFrame({"value": [config.scale + seed]})
