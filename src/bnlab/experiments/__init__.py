"""The registered experiments: importing this package registers every one of them."""

from bnlab.experiments import convergence  # noqa: F401  (registers)
from bnlab.experiments.base import REGISTRY, Claim, Experiment, ExperimentConfig, RunContext, get, register
from bnlab.experiments.runner import Outcome, load_outcome, run_experiment

__all__ = [
    "REGISTRY",
    "Claim",
    "Experiment",
    "ExperimentConfig",
    "Outcome",
    "RunContext",
    "get",
    "load_outcome",
    "register",
    "run_experiment",
]
