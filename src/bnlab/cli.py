"""The ``bnlab`` command: a thin shell over experiments, theory, report and data.

User errors (bad option, unknown experiment, invalid config or matrix, a file system that refuses) print one line
and exit with status 2; Ctrl-C exits 130 saying how to resume; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
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


def _print_claims(claims, title: str) -> None:
    table = Table("claim", "quantity", "predicted", "measured", "rel. error", "verdict", title=title)
    for c in claims:
        table.add_row(
            c.claim,
            c.quantity,
            "-" if c.predicted is None else f"{c.predicted:.4g}",
            "-" if c.measured is None else f"{c.measured:.4g}",
            "-" if c.rel_error is None else f"{c.rel_error:.2%}",
            "[green]holds[/]" if c.holds else "[red]does not hold[/]",
        )
    console.print(table)


def _writable_out(ctx, param, value: str) -> Path:
    """``--out``: an existing writable folder, or a new one whose parent exists and is writable (checked before
    anything runs, so that a bad path fails in one line and leaves nothing behind)."""
    return check_out(Path(value))


def check_out(out: Path, label: str = "--out") -> Path:
    if out.exists():
        if not out.is_dir():
            raise BnlabError(f"{label} {out} is a file, not a folder")
        if not os.access(out, os.W_OK | os.X_OK):
            raise BnlabError(f"{label} {out} is not writable")
        return out
    parent = out.absolute().parent
    if not parent.is_dir():
        raise BnlabError(
            f"{label} {out}: its parent {parent} {'is not a folder' if parent.exists() else 'does not exist'}"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BnlabError(f"{label} {out}: its parent {parent} is not writable")
    return out


@contextmanager
def _tidy_on_failure(out: Path):
    """If ``out`` is new and the command fails, remove the empty folders it left (never a file)."""
    from bnlab.sweep.files import remove_empty_dirs

    new = not out.exists()
    try:
        yield
    except BaseException:
        if new:
            remove_empty_dirs(out)
        raise


def execution_options(command):
    """Where and how runs compute: shared by ``run`` and ``reproduce``."""
    options = [
        click.option("--device", default=None, help="cpu (default) or cuda."),
        click.option("--out", default=DEFAULT_OUT, show_default=True, callback=_writable_out, help="Results folder."),
        click.option(
            "--executor",
            type=click.Choice(["local", "process", "ray"]),
            default="local",
            show_default=True,
            help="Where chunks compute: this process, a process pool, or Ray.",
        ),
        click.option("--workers", type=click.IntRange(min=1), default=None, help="Processes for --executor process."),
        click.option("--ray-address", default=None, help="Address of an existing Ray cluster (--executor ray)."),
        click.option("--no-progress", is_flag=True, help="Hide the progress bar."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@cli.command()
@click.argument("name")
@click.option("--profile", type=click.Choice(["quick", "paper", "mnist"]), default="quick", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field.")
@click.option("--dry-run", is_flag=True, help="Say how many chunks would be computed and how many are stored.")
@execution_options
def run(name, profile, overrides, dry_run, device, out, executor, workers, ray_address, no_progress) -> None:
    """Run one experiment (resumable; stored chunks of any run in OUT are reused, never recomputed)."""
    from bnlab.experiments.runner import plan_experiment, run_experiment
    from bnlab.sweep import make_executor

    if dry_run:
        plan = plan_experiment(name, out, profile=profile, overrides=list(overrides), device=device)
        state = "complete" if plan.complete else ("stored, incomplete" if plan.path.exists() else "new")
        console.print(f"run {plan.run_id} ({state}): {plan.path}")
        console.print(f"grid: {plan.chunks} chunks")
        console.print(f"chunks: {plan.to_compute} to compute, {plan.stored} stored")
        if plan.partial:
            console.print("(a later stage, if any, is counted once this one is stored)", style="dim")
        return
    with _tidy_on_failure(out):
        outcome = run_experiment(
            name,
            out,
            profile=profile,
            overrides=list(overrides),
            device=device,
            executor=make_executor(executor, ray_address, workers),
            progress=not no_progress,
        )
    _print_claims(outcome.claims, outcome.experiment.name)
    if outcome.experiment.row_note:
        console.print(f"{outcome.experiment.row}: {outcome.experiment.row_note(outcome.claims)}", markup=False)
    state = "reused stored results" if outcome.reused else f"computed {len(outcome.store.computed)} chunk(s)"
    console.print(f"{state}: run {outcome.store.run_id} in {outcome.store.path}")
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
    """H from a ``.npy``, or H, g (and optionally c) from a ``.npz``; anything else is one clear line."""
    from bnlab.ols import Problem

    data = _load_arrays(path)
    if isinstance(data, np.ndarray):
        H = data
        # With only H given, take a fixed all-ones direction for the optimum (u = 1, g = H u).
        square = H.ndim == 2 and H.shape[0] == H.shape[1] and H.dtype.kind in "biuf"
        return Problem.from_moments(H, H @ np.ones(H.shape[0]) if square else np.ones(1))
    if "H" not in data or "g" not in data:
        raise BnlabError(f"{path} must hold arrays 'H' and 'g' (it holds {', '.join(sorted(data)) or 'none'})")
    return Problem.from_moments(data["H"], data["g"], data.get("c"))


_NPY_MAGIC, _ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"


def _load_arrays(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    """The array of a ``.npy`` or the arrays of a ``.npz`` (never pickled objects), read whole and checked."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_NPY_MAGIC))
    except OSError as exc:
        raise BnlabError(f"cannot read {path}: {exc.strerror}") from None
    if not head:
        raise BnlabError(f"{path} is empty")
    if not (head.startswith(_NPY_MAGIC) or head.startswith(_ZIP_MAGIC)):
        raise BnlabError(f"{path} is not a NumPy .npy or .npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded:
            return {k: loaded[k] for k in loaded.files}
    except Exception as exc:  # noqa: BLE001 - NumPy's parsers raise many types (even tokenize errors) on bad bytes
        raise BnlabError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None


@cli.command()
@click.option("--profile", type=click.Choice(["quick", "paper", "mnist"]), default="quick", show_default=True)
@click.option("--only", "only", multiple=True, metavar="NAME", help="Run only this experiment (repeatable).")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="[NAME.]KEY=VALUE",
    help="Override KEY in every experiment that has it, or only in NAME (e.g. nn-lr.steps=300).",
)
@click.option(
    "--families",
    is_flag=True,
    help="Run every OLS experiment (or --only some) over the family matrix of docs/problems.md instead, and write "
    "OUT/families.csv and OUT/families.md (the claims that do not hold, each with its family).",
)
@execution_options
def reproduce(profile, only, overrides, families, device, out, executor, workers, ray_address, no_progress) -> None:
    """Run every experiment (or --only some) and write OUT/report.html and OUT/summary.json.

    Exits 0 whether or not every claim holds: a claim that does not hold is a measurement, listed at the end.
    """
    from bnlab.experiments import REGISTRY, get, run_experiment
    from bnlab.report import build_report
    from bnlab.sweep import make_executor

    if families:
        if overrides:
            raise BnlabError("--set does not apply with --families: the family matrix fixes the problem fields")
        _reproduce_families(profile, only, out, make_executor(executor, ray_address, workers), device, not no_progress)
        return
    names = list(dict.fromkeys(only)) if only else list(REGISTRY)
    for name in names:
        get(name)  # unknown names fail first
    per_experiment = _route_overrides(overrides, names)
    for name in names:  # invalid configs and missing data fail before anything runs
        _check_runnable(name, get(name).resolve(profile, per_experiment[name]))
    runner = make_executor(executor, ray_address, workers)
    outcomes = []
    with _tidy_on_failure(out):
        for name in names:
            console.print(f"[bold]{name}[/] ({profile})")
            outcome = run_experiment(
                name,
                out,
                profile=profile,
                overrides=per_experiment[name],
                device=device,
                executor=runner,
                progress=not no_progress,
            )
            done = "reused" if outcome.reused else "computed"
            console.print(f"  {done}: run {outcome.store.run_id}{_times(outcome)}")
            outcomes.append(outcome)
    html_path, json_path = build_report(out, outcomes, profile)
    _print_verdicts(outcomes)
    console.print(f"report: {html_path}\nsummary: {json_path}")


def _times(outcome) -> str:
    """``", 12.3 s wall, 11.9 s CPU"`` from the run's record (its compute only, summing resumed parts)."""
    run = outcome.store.read_run()
    if outcome.reused or "wall_s" not in run:
        return ""
    cpu = f", {run['cpu_s']:.1f} s CPU" if "cpu_s" in run else ""
    return f", {run['wall_s']:.1f} s wall{cpu}"


def _route_overrides(items, names: list[str]) -> dict[str, list[str]]:
    """``key=value`` goes to every experiment among ``names`` whose config has ``key`` (at least one must);
    ``name.key=value`` to experiment ``name`` only (which must be among ``names``)."""
    from bnlab.experiments import get

    routed: dict[str, list[str]] = {name: [] for name in names}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BnlabError(f"--set {item!r} is not of the form [NAME.]KEY=VALUE")
        scope, dot, field = key.strip().rpartition(".")
        if dot:
            get(scope)  # an unknown experiment name: one line listing the known ones
            if scope not in routed:
                raise BnlabError(f"--set {item!r}: {scope} is not among the experiments being run")
            routed[scope].append(f"{field}={value}")
            continue
        takers = [name for name in names if field in get(name).config.model_fields]
        if not takers:
            raise BnlabError(f"--set {item!r}: no experiment being run has a key {field!r}")
        for name in takers:
            routed[name].append(f"{field}={value}")
    return routed


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
    from bnlab.experiments.runner import check_inputs

    try:
        check_inputs(name, config)
    except BnlabError as exc:
        raise BnlabError(f"{exc}, or leave it out with --only") from None


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, exists=True))
@click.option("--run", "run_ids", multiple=True, metavar="RUN_ID", help="Report this run (repeatable; see bnlab ls).")
def report(out, run_ids) -> None:
    """Rebuild OUT/report.html and OUT/summary.json from stored results (nothing is recomputed).

    Without --run: the runs of the last report, else the latest complete run of each experiment.
    """
    from bnlab.report import rebuild_report
    from bnlab.results import runs

    check_out(Path(out), "report folder")
    outcomes, html_path, json_path = rebuild_report(out, run_ids)
    counts = runs(out).groupby("experiment").size()
    for o in outcomes:
        name = o.experiment.name
        console.print(f"{name}: run {o.store.run_id} (of {counts.get(name, 1)} stored run(s) of {name})")
    _print_verdicts(outcomes)
    console.print(f"report: {html_path}\nsummary: {json_path}")


@cli.command("ls")
@click.argument("out", default=DEFAULT_OUT, type=click.Path(file_okay=False))
@click.option("--experiment", default=None, help="Only the runs of this experiment.")
def list_runs(out, experiment) -> None:
    """List the runs stored in OUT: experiment, profile, the config values that differ, status, claims, time."""
    from bnlab.results import differing, runs

    frame = runs(out, experiment)
    table = Table("run", "experiment", "profile", "differs", "status", "claims", "wall", "device", box=None)
    for name, group in frame.groupby("experiment", sort=False):
        keys = differing(list(group.config))
        for row in group.itertuples():
            differs = " ".join(f"{k}={row.config.get(k)}" for k in keys) or "-"
            wall = "-" if row.wall_s is None or row.wall_s != row.wall_s else f"{row.wall_s:.1f}s"
            status = "[green]complete[/]" if row.status == "complete" else "[yellow]incomplete[/]"
            table.add_row(row.run_id, name, row.profile, differs, status, row.claims, wall, row.devices)
    console.print(table if len(frame) else f"no runs under {out}")


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


@cli.command("lr-window")
@click.option("--model", required=True, metavar="FILE.py:FUNCTION", help="A function returning a torch.nn.Sequential.")
@click.option("--data", "data_name", required=True, metavar="NAME|FILE.npz", help="A bnlab dataset or an .npz file.")
@click.option("--lrs", default="1e-3:1e3:40", show_default=True, metavar="MIN:MAX:COUNT", help="Geometric grid.")
@click.option("--seeds", default=3, show_default=True, help="Initialisations per learning rate.")
@click.option("--steps", default=500, show_default=True, help="SGD/Adam updates per network.")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True)
@click.option("--batch-size", default=100, show_default=True)
@click.option("--data-dir", default=None, type=click.Path(file_okay=False), help="Default: $BNLAB_DATA_DIR.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Default: bnlab-out/lr-window/MODEL-DATA.")
def lr_window(model, data_name, lrs, seeds, steps, optimizer, batch_size, data_dir, device, out) -> None:
    """Measure the learning-rate window of your network, with its BN and without (every rate trained in full)."""
    from bnlab.experiments.lr_window import run_lr_window

    options = {"lrs": lrs, "seeds": seeds, "steps": steps, "optimizer": optimizer, "batch_size": batch_size}
    result = run_lr_window(model, data_name, out=out, data_dir=data_dir, device=device, **options)
    _print_claims(result.claims, "lr-window")
    console.print(f"tables, figure and summary.json in {result.out}")


@cli.group()
def data() -> None:
    """Datasets: the embedded ones need nothing; real ones are read from a folder or fetched."""


@data.command("list")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False), help="Default: $BNLAB_DATA_DIR.")
def data_list(data_dir) -> None:
    """Show every dataset, whether it is available here, and files that look like it but are not accepted."""
    from bnlab.nn import DATASETS, default_data_dir
    from bnlab.nn.data import EMBEDDED, dataset_folder, missing_files, near_miss_files

    folder = Path(data_dir).expanduser() if data_dir else default_data_dir()
    table = Table("dataset", "source", "available", box=None, title=f"data folder: {folder}")
    hints = []
    for name in DATASETS:
        if name in EMBEDDED:
            table.add_row(name, "embedded (generated locally)", "yes")
            continue
        missing = missing_files(name, folder)
        table.add_row(name, str(dataset_folder(name, folder)), "yes" if not missing else f"no: {missing[0].name}")
        if missing:
            hints.append(f"to get {name}: bnlab data add {name} FOLDER, or bnlab data fetch {name}")
        hints += [f"{name}: found {p} but it is not an accepted name or form" for p in near_miss_files(name, folder)]
    console.print(table)
    for line in hints:  # plain lines: a path must not be wrapped
        click.echo(line)


@data.command("add")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True))
@click.option("--data-dir", default=None, type=click.Path(file_okay=False), help="Default: $BNLAB_DATA_DIR.")
def data_add(name, path, data_dir) -> None:
    """Check your copy of NAME at PATH (structure, counts, labels, published MD5) and copy it into the data folder.

    PATH: the folder with the four IDX files (mnist, fashion_mnist; official or dotted names, raw or .gz), or for
    cifar10 the official cifar-10-python.tar.gz or its extracted batches.
    """
    from bnlab.nn.fetch import add

    folder, notes = add(name, path, data_dir)
    for note in notes:
        console.print(f"note: {note}")
    console.print(f"{name}: checked and copied to {folder}")


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
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
        click.echo("interrupted: finished chunks are kept; run the same command again to resume", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        ctx_hint = f" (see '{exc.ctx.command_path} --help')" if getattr(exc, "ctx", None) else ""
        click.echo(f"error: {exc.format_message()}{ctx_hint}", err=True)
        return 2
    except BnlabError as exc:
        click.echo(f"error: {' '.join(str(exc).split())}", err=True)  # one line, whatever the message holds
        return 2
    except OSError as exc:  # the file system said no (permissions, disk full, a folder removed underneath)
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"error: {exc.strerror or exc}{where}", err=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
