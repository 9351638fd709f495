"""The report page in a real browser (Debian's chromium, headless): it renders, every figure loads, no console
errors. Run with ``pytest -m browser``; skipped where chromium is not installed."""

import re
import shutil
import subprocess

import pytest

from bnlab.experiments import run_experiment
from bnlab.report import build_report

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Appended to a copy of the page: after load, the title says how many images decoded and how many failed.
PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.title = "PROBE images=" + imgs.length + " loaded=" + ok + " rows=" +
    document.querySelectorAll("#verdicts tbody tr").length;
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_page_renders_in_chromium_with_every_figure_and_no_console_error(tmp_path):
    outcomes = [
        run_experiment("scaling-law", tmp_path, "quick", {"steps": 40, "identity_steps": 10}, progress=False),
        run_experiment(
            "phase-diagram",
            tmp_path,
            "quick",
            {"num_eps": 7, "eps_a": [1.0, 2.5], "steps": 200, "seeds": 1},
            progress=False,
        ),
    ]
    html, _ = build_report(tmp_path, outcomes, "quick")
    probe = tmp_path / "probe.html"
    probe.write_text(html.read_text().replace("</body>", PROBE + "</body>"))
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(r"<title>PROBE images=(\d+) loaded=(\d+) rows=(\d+)</title>", result.stdout)
    assert match, result.stdout[:500]
    images, loaded, rows = map(int, match.groups())
    expected = sum(p.suffix == ".png" for o in outcomes for p in o.figures)
    assert images == expected >= 2
    assert loaded == images
    assert rows == 2  # one verdict row per paper row present
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
