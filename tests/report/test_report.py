"""The report: reproduce, then rebuild from the store alone; the JSON summary carries the verdicts."""

import json

import pytest

import bnlab.experiments.base as base
from bnlab.cli import main
from bnlab.experiments import REGISTRY, Claim, run_experiment
from bnlab.report import ROW_ORDER, build_report, rebuild_report, row_verdicts

# Two cheap experiments on tiny configs, under two different rows.
TINY = {
    "phase-diagram": {"num_eps": 7, "eps_a": [1.0, 1.5, 2.5], "steps": 300, "seeds": 1, "compile": False},
    "scaling-law": {"steps": 40, "identity_steps": 10},
}


@pytest.fixture
def reproduced(tmp_path):
    outcomes = [run_experiment(n, tmp_path, "quick", cfg, progress=False) for n, cfg in TINY.items()]
    html, summary = build_report(tmp_path, outcomes, "quick")
    return tmp_path, outcomes, html, summary


def _forbid_running(monkeypatch):
    """Make every experiment's ``run`` fail: anything that recomputes would raise."""

    def boom(cfg, ctx):
        raise AssertionError("the report must not recompute")

    for name, exp in list(REGISTRY.items()):
        monkeypatch.setitem(REGISTRY, name, base.Experiment(**{**exp.__dict__, "run": boom}))


def test_page_is_self_contained_with_every_figure_embedded(reproduced):
    _, outcomes, html, _ = reproduced
    page = html.read_text()
    pngs = [p for o in outcomes for p in o.figures if p.suffix == ".png"]
    assert page.count("data:image/png;base64,") == len(pngs) >= 2
    assert 'src="http' not in page and "<script src" not in page  # opens offline
    assert 'id="verdicts"' in page and "Convergence" in page and "Robustness to learning rate" in page


def test_figures_are_shown_at_their_natural_size_and_tables_scroll(reproduced):
    _, outcomes, html, _ = reproduced
    page = html.read_text()
    png = next(p for o in outcomes for p in o.figures if p.suffix == ".png")
    width = int.from_bytes(png.read_bytes()[16:20], "big")
    assert f'width="{width // 2}"' in page  # written at 2x the CSS pixel density: shown at half, never upscaled
    assert "figure img { width: 100%" not in page and "max-width: 100%" in page
    assert page.count("<table") == page.count('<div class="scroll">')  # every table inside a scroller


def test_json_summary_has_verdicts_and_numbers(reproduced):
    _, outcomes, _, summary = reproduced
    data = json.loads(summary.read_text())
    assert [r["row"] for r in data["rows"]] == ["Convergence", "Robustness to learning rate"]
    for row in data["rows"]:
        assert isinstance(row["reproduced"], bool) and row["claims_total"] >= 1
    claims = [c for e in data["experiments"] for c in e["claims"]]
    fields = {"id", "claim", "quantity", "predicted", "measured", "rel_error", "holds", "ci_low", "ci_high"}
    assert claims and all(fields <= set(c) for c in claims)
    assert len({c["id"] for c in claims}) == len(claims)
    assert not any("np." in c["claim"] + c["quantity"] + c["detail"] for c in claims)
    assert data["profile"] == "quick"
    assert all(e["environment"].get("python") for e in data["experiments"])


def test_markdown_verdicts_mirror_the_summary(reproduced):
    out, _, _, summary = reproduced
    data = json.loads(summary.read_text())
    text = (out / "verdicts.md").read_text()
    claims = [c for e in data["experiments"] for c in e["claims"]]
    assert text.count("\n| ") == len(data["rows"]) + len(claims) + 2  # two header rows
    for row in data["rows"]:
        assert f"| {row['row']} |" in text and f"({row['claims_held']}/{row['claims_total']} claims)" in text
    # ``||w||`` stays itself (pipes escaped, GitHub renders \| as |), never //w//; every claim by its id.
    assert "//w" not in text and "\\|\\|w_{k+1}\\|\\|^2" in text
    assert all(f"`{c['id']}`" in text for c in claims)
    # A bound shows its relation as the prediction: the GD control of the scaling law expects a deviation > 1.
    assert "| > 1 |" in text


def test_report_rebuilds_from_the_store_without_recomputing(reproduced, monkeypatch):
    out, outcomes, html, summary = reproduced
    before = json.loads(summary.read_text())
    html.unlink()
    _forbid_running(monkeypatch)
    assert main(["report", str(out)]) == 0
    assert html.exists()
    after = json.loads(summary.read_text())
    assert after["rows"] == before["rows"]
    assert [e["claims"] for e in after["experiments"]] == [e["claims"] for e in before["experiments"]]


def test_report_without_a_summary_takes_the_latest_complete_runs(reproduced, monkeypatch):
    out, _, _, summary = reproduced
    summary.unlink()
    _forbid_running(monkeypatch)
    outcomes, _, _ = rebuild_report(out)
    assert sorted(o.experiment.name for o in outcomes) == sorted(TINY)


def test_report_of_an_empty_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no complete runs" in capsys.readouterr().err


def test_reproduce_cli_runs_only_the_named_experiments_and_prints_verdicts(tmp_path, capsys):
    code = main(["reproduce", "--only", "scaling-law", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert "Robustness" in text and "reproduced" in text and "every claim holds" in text
    data = json.loads((tmp_path / "summary.json").read_text())
    assert [e["name"] for e in data["experiments"]] == ["scaling-law"]
    assert (tmp_path / "report.html").exists()


def test_reproduce_rejects_an_unknown_experiment_before_running(tmp_path, capsys):
    assert main(["reproduce", "--only", "no-such-thing", "--out", str(tmp_path)]) == 2
    assert "unknown experiment" in capsys.readouterr().err


def test_rows_follow_the_papers_order_and_unknown_rows_come_last():
    class Fake:
        def __init__(self, name, row, holds):
            self.experiment = type("E", (), {"name": name, "row": row})()
            self.claims = [Claim(id="c", claim="c", quantity="q", predicted=1.0, measured=1.0, holds=holds)]

    outcomes = [Fake("n", "Neural networks", True), Fake("d", ROW_ORDER[3], False), Fake("c", ROW_ORDER[0], True)]
    rows = row_verdicts(outcomes)
    assert [r["row"] for r in rows] == [ROW_ORDER[0], ROW_ORDER[3], "Neural networks"]
    assert [r["reproduced"] for r in rows] == [True, False, True]
    assert rows[1]["failing"] == ["d: c"]
