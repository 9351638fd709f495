"""Problems built from data or moment files: a singular H names its cause; complex or vector ``c`` is refused."""

import numpy as np
import pytest

from bnlab import BnlabError
from bnlab.ols import Problem

rng = np.random.default_rng(0)
X = rng.standard_normal((50, 4))
y = X @ np.array([1.0, -2.0, 0.5, 3.0])


@pytest.mark.parametrize(
    ("data", "cause"),
    [
        (np.column_stack([X[:, :3], np.full(50, 7.0)]), "column(s) [3] are constant"),
        (np.column_stack([X[:, :3], 2 * X[:, 0] - X[:, 2]]), "columns [0, 2, 3] are collinear"),
        (X[:3], "3 rows for 4 columns"),
    ],
)
def test_singular_data_names_the_cause(data, cause):
    with pytest.raises(BnlabError, match="from the data is singular") as info:
        Problem.from_data(data, y[: len(data)])
    assert cause in str(info.value)


def test_regular_data_builds_a_problem():
    assert Problem.from_data(X, y).d == 4


def test_complex_and_vector_inputs_are_refused():
    with pytest.raises(BnlabError, match="H must be real"):
        Problem.from_moments(np.eye(2) * (1 + 1e-3j), np.ones(2))
    with pytest.raises(BnlabError, match="c must be a single number"):
        Problem.from_moments(np.eye(2), np.ones(2), np.ones(2))
    assert Problem.from_moments(np.eye(2), np.ones(2), np.float64(3.0)).c == 3.0
