"""The learning-rate window, on synthetic cost curves whose answer is known: one definition for least squares
(cost log steps, allowance log F) and networks (cost -accuracy, allowance tol)."""

import numpy as np
import pytest

from bnlab.errors import BnlabError
from bnlab.experiments.windows import Window, accuracy_window, best_level, lr_window, steps_window


def test_window_of_a_one_over_eps_curve_with_a_cliff():
    # S = 100 / eps up to eps = 1 (best: S = 100), then a cliff: the 10x window is eps in [0.1, 1] + half a step.
    eps = np.logspace(-3, 2, 51)  # 10 points per decade
    steps = np.where(eps <= 1.0 + 1e-12, 100 / eps, np.inf)
    assert steps_window(eps, steps, 10.0).width == pytest.approx(1.0 + 0.05, abs=1e-9)
    assert steps_window(eps, steps, 2.0).width == pytest.approx(np.log10(2) + 0.05, abs=1e-9)
    assert steps_window(eps, steps, 10.0).hi == pytest.approx(10**0.05)


def test_window_interpolates_between_grid_points():
    eps = np.logspace(-2, 2, 9)  # two points per decade
    steps = 10 * np.maximum(eps, 1 / eps)  # best 10 at eps = 1, symmetric in log eps, slope 1
    window = steps_window(eps, steps, 10.0)
    assert window.width == pytest.approx(2.0, abs=1e-9)  # 0.1 .. 10 exactly
    assert (window.lo, window.hi) == pytest.approx((0.1, 10.0))


def test_a_bump_splits_the_window_but_not_the_span():
    eps = np.logspace(-2, 2, 41)
    steps = np.full(41, 10.0)
    steps[20] = 1000.0  # a bump above 10x at eps = 1
    window = steps_window(eps, steps, 10.0)
    assert len(window.runs) == 2
    assert window.span == pytest.approx(4.0, abs=1e-9)
    assert window.width < window.span


def test_nothing_converged_gives_nan():
    window = steps_window(np.logspace(-1, 1, 5), np.full(5, np.inf), 10.0)
    assert window == Window(()) and np.isnan(window.width) and np.isnan(window.span)


def test_accuracy_window_interpolates_its_edges():
    lrs = np.logspace(-3, 3, 7)
    acc = np.array([0.5, 0.8, 0.9, 0.88, 0.86, 0.2, np.nan])
    # Within 0.05 of 0.9 means acc >= 0.85: 0.8 -> 0.9 crosses 0.85 half-way (lr 10^-1.5); 0.86 -> 0.2 crosses
    # it 1/66 of the way from lr 10 to 100.
    window = accuracy_window(lrs, acc, tol=0.05)
    assert window.lo == pytest.approx(10**-1.5)
    assert window.hi == pytest.approx(10 ** (1 + 1 / 66))
    assert window.width == pytest.approx(2.5 + 1 / 66)
    # A NaN neighbour is a cliff (half a grid step), like an unreached tolerance; the grid's end is an edge.
    assert accuracy_window(lrs, acc, tol=0.8).hi == pytest.approx(10**2.5)
    assert accuracy_window(lrs[:3], [0.1, 0.2, 0.9], tol=0.0).runs == ((1e-1, 1e-1),)


def test_both_layers_share_one_definition():
    eps = np.logspace(-2, 2, 9)
    steps = 10 * np.maximum(eps, 1 / eps)
    assert steps_window(eps, steps, 3.0) == lr_window(eps, np.log(steps), np.log(3.0))
    assert accuracy_window(eps, -np.log(steps), np.log(3.0)) == steps_window(eps, steps, 3.0)


def test_bad_input_is_refused():
    with pytest.raises(BnlabError, match="equal-length"):
        lr_window([1.0, 2.0], [1.0], 0.1)
    with pytest.raises(BnlabError, match="positive"):
        lr_window([0.0, 2.0], [1.0, 1.0], 0.1)


def test_best_level_is_the_lowest_that_neighbours_all_reach():
    cost = np.array([9.0, 5.0, 1.0, 6.0, 4.0, 3.0, 4.5, np.inf, 2.0])
    assert best_level(cost) == 1.0  # the lone lucky point
    assert best_level(cost, sustain=3) == 4.5  # (4, 3, 4.5): the best three in a row
    assert best_level(cost[[0, 7, 8]], sustain=3) == 2.0  # no three finite in a row: the minimum
    assert np.isnan(best_level(np.full(3, np.inf), sustain=2))
