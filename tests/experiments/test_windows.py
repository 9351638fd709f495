"""The learning-rate window in decades, on synthetic steps-to-tolerance curves whose answer is known."""

import numpy as np
import pytest

from bnlab.experiments.windows import window_runs, window_span, window_width


def test_window_of_a_one_over_eps_curve_with_a_cliff():
    # S = 100 / eps up to eps = 1 (best: S = 100), then a cliff: the 10x window is eps in [0.1, 1] + half a step.
    eps = np.logspace(-3, 2, 51)  # 10 points per decade
    steps = np.where(eps <= 1.0 + 1e-12, 100 / eps, np.inf)
    assert window_width(eps, steps, 10.0) == pytest.approx(1.0 + 0.05, abs=1e-9)
    assert window_width(eps, steps, 2.0) == pytest.approx(np.log10(2) + 0.05, abs=1e-9)


def test_window_interpolates_between_grid_points():
    eps = np.logspace(-2, 2, 9)  # two points per decade
    steps = 10 * np.maximum(eps, 1 / eps)  # best 10 at eps = 1, symmetric in log eps, slope 1
    assert window_width(eps, steps, 10.0) == pytest.approx(2.0, abs=1e-9)  # 0.1 .. 10 exactly


def test_a_bump_splits_the_window_but_not_the_span():
    eps = np.logspace(-2, 2, 41)
    steps = np.full(41, 10.0)
    steps[20] = 1000.0  # a bump above 10x at eps = 1
    runs = window_runs(eps, steps, 10.0)
    assert len(runs) == 2
    assert window_span(eps, steps, 10.0) == pytest.approx(4.0, abs=1e-9)
    assert window_width(eps, steps, 10.0) < window_span(eps, steps, 10.0)


def test_nothing_converged_gives_nan():
    assert np.isnan(window_width(np.logspace(-1, 1, 5), np.full(5, np.inf), 10.0))
