"""Plotting has no global side effects: importing bnlab, every experiment, the report and the CLI leaves
matplotlib's backend and rcParams as they were; the house style applies inside ``figure_style`` only."""

import subprocess
import sys

import matplotlib as mpl

from bnlab.experiments.plotting import STYLE, figure_style, new_figure, save

PROBE = """
import matplotlib as mpl
before = (mpl.rcParams.copy(), mpl.rcParams._get("backend"))
import bnlab, bnlab.experiments, bnlab.report, bnlab.cli  # noqa: F401,E401
after = (mpl.rcParams.copy(), mpl.rcParams._get("backend"))
changed = sorted(k for k in before[0] if before[0]._get(k) != after[0]._get(k))
print("CHANGED", changed, before[1], after[1])
assert not changed and before[1] == after[1]
"""


def test_importing_bnlab_leaves_matplotlib_alone():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_style_is_scoped_to_the_block(tmp_path):
    before = mpl.rcParams.copy()
    with figure_style():
        assert mpl.rcParams["axes.spines.top"] is STYLE["axes.spines.top"]
        fig, (ax,) = new_figure()
        ax.plot([1, 2], [3, 4])
        png, svg = save(fig, tmp_path, "probe")
    assert png.stat().st_size > 0 and svg.stat().st_size > 0
    assert {k: mpl.rcParams._get(k) for k in STYLE} == {k: before._get(k) for k in STYLE}
