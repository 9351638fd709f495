"""The ``bnlab`` command: a thin shell over experiments, theory, report and data.

User errors (bad option, unknown experiment, invalid config or matrix) print one line and exit with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from bnlab.errors import BnlabError

console = Console()
DEFAULT_OUT = "bnlab-out"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bnlab")
def cli() -> None:
    """bnlab: why batch normalisation makes gradient descent robust to the learning rate, measured."""


@cli.command("list")
def list_experiments() -> None:
    """Show the registered experiments with their purpose."""
    from bnlab.experiments import REGISTRY

    table = Table("experiment", "paper row", "facts", "purpose", box=None)
    for exp in REGISTRY.values():
        table.add_row(exp.name, exp.row, " ".join(exp.facts), exp.purpose)
    console.print(table)


def _print_claims(outcome) -> None:
    table = Table("claim", "quantity", "predicted", "measured", "rel. error", "verdict", title=outcome.experiment.name)
    for c in outcome.claims:
        table.add_row(
            c.claim,
            c.quantity,
            "-" if c.predicted is None else f"{c.predicted:.4g}",
            "-" if c.measured is None else f"{c.measured:.4g}",
            "-" if c.rel_error is None else f"{c.rel_error:.2%}",
            "[green]holds[/]" if c.holds else "[red]does not hold[/]",
        )
    console.print(table)


def execution_options(command):
    """Where and how runs compute: shared by ``run`` and ``reproduce``."""
    options = [
        click.option("--device", default=None, help="cpu (default) or cuda."),
        click.option("--out", default=DEFAULT_OUT, show_default=True, type=click.Path(file_okay=False)),
        click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True),
        click.option("--ray-address", default=None, help="Address of an existing Ray cluster."),
        click.option("--no-progress", is_flag=True, help="Hide the progress bar."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@cli.command()
@click.argument("name")
@click.option("--profile", type=click.Choice(["quick", "paper"]), default="quick", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field.")
@execution_options
def run(name, profile, overrides, device, out, executor, ray_address, no_progress) -> None:
    """Run one experiment (resumable; an identical config reuses its stored results)."""
    from bnlab.experiments import run_experiment
    from bnlab.sweep import make_executor

    outcome = run_experiment(
        name,
        out,
        profile=profile,
        overrides=list(overrides),
        device=device,
        executor=make_executor(executor, ray_address),
        progress=not no_progress,
    )
    _print_claims(outcome)
    if outcome.experiment.row_note:
        console.print(f"{outcome.experiment.row}: {outcome.experiment.row_note(outcome.claims)}", markup=False)
    state = "reused stored results" if outcome.reused else "computed"
    console.print(f"{state}: {outcome.store.path}")
    for fig in outcome.figures:
        if fig.suffix == ".png":
            console.print(f"figure: {fig}")


@cli.command()
@click.option("--d", "d", type=int, default=10, show_default=True, help="Dimension.")
@click.option("--kappa", type=float, default=100.0, show_default=True, help="Condition number.")
@click.option(
    "--spectrum",
    "--spacing",
    "spectrum",
    type=click.Choice(["linear", "log", "marchenko-pastur", "spiked"]),
    default="log",
    show_default=True,
    help="Spectrum family (docs/problems.md).",
)
@click.option("--aspect", type=float, default=4.0, show_default=True, help="marchenko-pastur: n / d.")
@click.option("--rho", type=float, default=0.5, show_default=True, help="spiked: correlation in a block.")
@click.option("--spikes", type=int, default=1, show_default=True, help="spiked: number of blocks.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--u-law",
    type=click.Choice(["gaussian", "rademacher", "student-t", "sparse"]),
    default="gaussian",
    show_default=True,
)
@click.option("--u-norm", type=click.Choice(["gaussian", "unit"]), default="gaussian", show_default=True)
@click.option(
    "--matrix",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A .npy file with H, or a .npz with H and g (and optionally c), instead of a spectrum.",
)
@click.option("--eps", type=float, multiple=True, help="Learning rates at which to print GD's rate.")
def theory(d, kappa, spectrum, aspect, rho, spikes, seed, u_law, u_norm, matrix, eps) -> None:
    """Print a problem's closed-form quantities: thresholds, kappa, kappa*, optimal rates."""
    from bnlab.ols import Problem
    from bnlab.ols import theory as th

    if matrix:
        problem = _load_problem(Path(matrix))
    else:
        family = {"aspect": aspect, "rho": rho, "spikes": spikes, "u_law": u_law, "u_norm": u_norm}
        problem = Problem.from_spectrum(d, kappa, spectrum, seed=seed, **family)
    summary = th.summarise(problem)
    table = Table("quantity", "value", title=repr(problem), box=None)
    for key, value in vars(summary).items():
        table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
    for e in eps:
        table.add_row(f"gd_rate(eps={e:g})", f"{float(th.gd_rate(problem, e)):.6g}")
    console.print(table)


def _load_problem(path: Path):
    from bnlab.ols import Problem

    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BnlabError(f"cannot read {path}: {exc}") from None
    if isinstance(data, np.ndarray):
        H = data
        # With only H given, take a fixed all-ones direction for the optimum (u = 1, g = H u).
        return Problem.from_moments(H, H @ np.ones(H.shape[0]) if H.ndim == 2 and H.shape[0] == H.shape[1] else H[0])
    if "H" not in data or "g" not in data:
        raise BnlabError(f"{path} must hold arrays 'H' and 'g'")
    return Problem.from_moments(data["H"], data["g"], float(data["c"]) if "c" in data else None)


@cli.command()
@click.option("--profile", type=click.Choice(["quick", "paper"]), default="quick", show_default=True)
@click.option("--only", "only", multiple=True, metavar="NAME", help="Run only this experiment (repeatable).")
@click.option(
    "--families",
    is_flag=True,
    help="Run every OLS experiment (or --only some) over the family matrix of docs/problems.md instead, and write "
    "OUT/families.csv and OUT/families.md (the claims that do not hold, each with its family).",
)
@execution_options
def reproduce(profile, only, families, device, out, executor, ray_address, no_progress) -> None:
    """Run every experiment (or --only some) and write OUT/report.html and OUT/summary.json.

    Exits 0 whether or not every claim holds: a claim that does not hold is a measurement, listed at the end.
    """
    from bnlab.experiments import REGISTRY, get, run_experiment
    from bnlab.report import build_report
    from bnlab.sweep import make_executor

    if families:
        _reproduce_families(profile, only, out, make_executor(executor, ray_address), device, not no_progress)
        return
    names = list(dict.fromkeys(only)) if only else list(REGISTRY)
    for name in names:  # unknown names, invalid configs and missing data fail before anything runs
        _check_runnable(name, get(name).resolve(profile))
    runner = make_executor(executor, ray_address)
    outcomes = []
    for name in names:
        console.print(f"[bold]{name}[/] ({profile})")
        outcome = run_experiment(name, out, profile=profile, device=device, executor=runner, progress=not no_progress)
        console.print(f"  {'reused' if outcome.reused else 'computed'}: {outcome.store.path}")
        outcomes.append(outcome)
    html_path, json_path = build_report(out, outcomes, profile)
    _print_verdicts(outcomes)
    console.print(f"report: {html_path}\nsummary: {json_path}")


def _reproduce_families(profile, only, out, runner, device, progress) -> None:
    from bnlab.experiments import get
    from bnlab.experiments.families import OLS_EXPERIMENTS, families_markdown, run_families

    names = list(dict.fromkeys(only)) if only else list(OLS_EXPERIMENTS)
    for name in names:
        if name not in OLS_EXPERIMENTS:
            get(name)  # an unknown name says so
            raise BnlabError(f"--families runs the OLS experiments only ({', '.join(OLS_EXPERIMENTS)}), not {name}")
    table = run_families(Path(out), profile, names, device=device, executor=runner, progress=progress)
    table.to_csv(Path(out) / "families.csv", index=False)
    (Path(out) / "families.md").write_text(families_markdown(table))
    console.print(f"{int(table.holds.sum())} of {len(table)} claims hold over the family matrix")
    console.print(f"table: {Path(out) / 'families.csv'}\nfailing claims by family: {Path(out) / 'families.md'}")


def _check_runnable(name: str, config) -> None:
    """A config that reads a real dataset needs its files first: say which, and how to get them."""
    from bnlab.nn.data import missing_files

    dataset = getattr(config, "dataset", None)
    if dataset is None:
        return
    missing = missing_files(dataset, getattr(config, "data_dir", None))
    if missing:
        raise BnlabError(
            f"{name} needs {dataset} ({missing[0]} is missing): run 'bnlab data fetch {dataset}' first, "
            f"or leave it out with --only"
        )


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, exists=True))
def report(out) -> None:
    """Rebuild OUT/report.html and OUT/summary.json from stored results (nothing is recomputed)."""
    from bnlab.report import rebuild_report

    outcomes, html_path, json_path = rebuild_report(out)
    _print_verdicts(outcomes)
    console.print(f"report: {html_path}\nsummary: {json_path}")


def _print_verdicts(outcomes) -> None:
    """The paper's summary table with a verdict per row, then every claim that does not hold."""
    from bnlab.report import row_verdicts

    table = Table("claim", "GD", "BNGD", "verdict", title="Verdicts (paper's summary table)")
    for row in row_verdicts(outcomes):
        verdict = "[green]reproduced[/]" if row["reproduced"] else "[red]not reproduced[/]"
        table.add_row(row["row"], row["gd"], row["bngd"], f"{verdict} ({row['claims_held']}/{row['claims_total']})")
    console.print(table)
    failing = [(o.experiment.name, c) for o in outcomes for c in o.claims if not c.holds]
    if failing:
        console.print(f"[red bold]{len(failing)} claim(s) do not hold:[/]")
        for name, c in failing:
            measured = "-" if c.measured is None else f"{c.measured:.4g}"
            predicted = "" if c.predicted is None else f", predicted {c.predicted:.4g}"
            console.print(f"  [red]x[/] {name}: {c.claim} ({c.quantity}: measured {measured}{predicted}; {c.detail})")
    else:
        console.print("[green bold]every claim holds[/]")


@cli.group()
def data() -> None:
    """Datasets: the embedded ones need nothing; real ones are read from a folder or fetched."""


@data.command("list")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False), help="Default: $BNLAB_DATA_DIR.")
def data_list(data_dir) -> None:
    """Show every dataset and whether it is available here."""
    from bnlab.nn import DATASETS, default_data_dir
    from bnlab.nn.data import EMBEDDED, missing_files

    folder = Path(data_dir).expanduser() if data_dir else default_data_dir()
    table = Table("dataset", "source", "available", box=None, title=f"data folder: {folder}")
    for name in DATASETS:
        if name in EMBEDDED:
            table.add_row(name, "embedded (generated locally)", "yes")
        else:
            present = not missing_files(name, folder)
            table.add_row(name, f"{folder / name}", "yes" if present else f"no: bnlab data fetch {name}")
    console.print(table)


@data.command("fetch")
@click.argument("name")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False), help="Default: $BNLAB_DATA_DIR.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds per download attempt.")
def data_fetch(name, data_dir, timeout) -> None:
    """Download NAME (mnist, fashion_mnist, cifar10) and verify its checksums."""
    from bnlab.nn import fetch

    path = fetch(name, data_dir, timeout=timeout)
    console.print(f"{name}: verified in {path}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning user errors into one line and exit status 2."""
    try:
        cli.main(args=argv, prog_name="bnlab", standalone_mode=False)
    except click.exceptions.Abort:
        console.print("aborted", style="red")
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        ctx_hint = f" (see 'bnlab {exc.ctx.info_name} --help')" if getattr(exc, "ctx", None) else ""
        click.echo(f"error: {exc.format_message()}{ctx_hint}", err=True)
        return 2
    except BnlabError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("interrupted: finished chunks are kept; run the same command again to resume", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
