"""Least squares with and without batch normalisation: problems, exact batched dynamics, closed-form theory."""

from bnlab.ols import modes, theory
from bnlab.ols.dynamics import Trajectory, bngd, gd
from bnlab.ols.problem import Problem, initial_weights

__all__ = ["Problem", "Trajectory", "bngd", "gd", "initial_weights", "modes", "theory"]
