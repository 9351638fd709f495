"""The registered experiments: importing this package registers every one of them."""

from bnlab.experiments import (  # noqa: F401  (registers)
    convergence,
    dimension,
    effective_step,
    lr_robustness,
    nn_effective_step,  # BN's self-tuned step inside networks
    nn_sweeps,  # the "Neural networks" row
    overparam,
    phase_diagram,
    rate,
    scaling_law,
)
from bnlab.experiments.base import REGISTRY, Experiment, ExperimentConfig, RunContext, get, register
from bnlab.experiments.claims import Claim, above, below, close_to, wider_than
from bnlab.experiments.runner import Outcome, load_outcome, run_experiment

__all__ = [
    "REGISTRY",
    "Claim",
    "Experiment",
    "ExperimentConfig",
    "Outcome",
    "above",
    "below",
    "close_to",
    "RunContext",
    "get",
    "load_outcome",
    "register",
    "run_experiment",
    "wider_than",
]
