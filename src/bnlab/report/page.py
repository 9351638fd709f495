"""Render the report page: Jinja2 template, figures embedded as base64 PNG (the page opens offline)."""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from bnlab.experiments.runner import Outcome

_ENV_KEYS = ("bnlab", "python", "torch", "numpy", "pandas", "platform", "host", "device", "cuda_device", "git_commit")


def _number(x: Any) -> str:
    """Numbers as a person reads them: 4 significant digits, scientific only when needed."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, (int, float)):
        if not math.isfinite(x):
            return "∞" if x > 0 else ("−∞" if x < 0 else "NaN")
        return f"{x:.4g}"
    return str(x)


def _percent(x: Any) -> str:
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "–"
    return f"{x:.2%}" if x >= 1e-4 else f"{x:.1e}"


_BOUND_SIGNS = {">": ">", "<": "<", ">=": "≥", "<=": "≤"}


def predicted_text(claim: dict[str, Any]) -> str:
    """The prediction as the claim checks it: ``0.02`` (close to it), ``> 0.67`` or ``≤ 1`` (a bound)."""
    sign = _BOUND_SIGNS.get(claim.get("relation", "~"))
    value = _number(claim["predicted"])
    return f"{sign} {value}" if sign and claim["predicted"] is not None else value


def measured_text(claim: dict[str, Any]) -> str:
    """The measurement, with its bootstrap interval where it has one: ``1.2 [0.9, 1.5]``."""
    value = _number(claim["measured"])
    if claim.get("ci_low") is None:
        return value
    return f"{value} [{_number(claim['ci_low'])}, {_number(claim['ci_high'])}]"


def _figure(path: Path) -> dict[str, Any]:
    """The PNG inline, shown at half its pixel width (it is written at twice the CSS pixel density, so it is
    never upscaled, and sharp on high-density screens)."""
    data = Path(path).read_bytes()
    width = int.from_bytes(data[16:20], "big")  # the IHDR chunk: width, then height, big-endian
    height = int.from_bytes(data[20:24], "big")
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return {"name": path.stem, "src": uri, "width": width // 2, "height": height // 2}


def _environments(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """Each environment field with its distinct values over the runs (usually one)."""
    rows = []
    times = sorted(e["environment"].get("time", "") for e in summary["experiments"] if e["environment"])
    for key in _ENV_KEYS:
        values = sorted({str(e["environment"].get(key)) for e in summary["experiments"] if e["environment"]})
        rows.append((key, ", ".join(values) if values else "–"))
    if times:
        rows.append(("runs computed", f"{times[0]} .. {times[-1]}" if times[0] != times[-1] else times[0]))
    rows.append(("report built", summary["generated"]))
    return rows


def render_page(summary: dict[str, Any], outcomes: Sequence[Outcome]) -> str:
    env = Environment(loader=PackageLoader("bnlab.report", "templates"), autoescape=select_autoescape(["html"]))
    env.filters["num"] = _number
    env.filters["pct"] = _percent
    env.filters["predicted"] = predicted_text
    env.filters["measured"] = measured_text
    figures = {
        o.experiment.name: [_figure(Path(p)) for p in o.figures if p.suffix == ".png" and Path(p).exists()]
        for o in outcomes
    }
    sections = []
    for row in summary["rows"]:
        exps = [e for e in summary["experiments"] if e["row"] == row["row"]]
        sections.append({**row, "experiments_data": [{**e, "figure_data": figures.get(e["name"], [])} for e in exps]})
    return env.get_template("report.html").render(
        summary=summary, sections=sections, environment=_environments(summary)
    )
