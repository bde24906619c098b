"""The `rankscope` command line (typer + rich). Torch is imported only by commands that need it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape  # messages quote configs and commands: `ranks=[8]` is no tag
from rich.table import Table

from rankscope import cli_checks as checks
from rankscope import cli_plan as plan_cli
from rankscope.errors import ConfigError, RankscopeError, RunFailed
from rankscope.probe_cli import probe_command
from rankscope.rundir import STORE_NAME, SweepDir

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Which LoRA rank (or full fine-tuning) for your task, and what each "
    "costs in forgotten knowledge and cross-domain robustness.",
)
world_app = typer.Typer(no_args_is_help=True, help="The embedded toy world.")
app.add_typer(world_app, name="world")
console = Console(stderr=True)
_state: dict = {"debug": False, "store": None}

ConfigArg = Annotated[
    Path | None, typer.Argument(help="Sweep config YAML (default: the embedded toy sweep).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a key, e.g. --set train.epochs=2 (repeatable)."),
]
OutOpt = Annotated[
    Path | None, typer.Option("--output-dir", "-o", help="Output directory (default runs/<name>).")
]
DirArg = Annotated[Path, typer.Argument(help="A sweep's output directory.")]


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False):
    _state["debug"] = debug


def _overrides(sets: list[str] | None, output_dir: Path | None) -> list[str]:
    """The `--set`s, with `-o DIR` as the `output_dir` key it sets."""
    return [*(sets or []), *([f"output_dir={output_dir}"] if output_dir is not None else [])]


def _load(config: Path | None, sets: list[str] | None, output_dir: Path | None):
    from rankscope.config import load_config

    return load_config(config, _overrides(sets, output_dir))


def _sourced(e: ConfigError, config: Path | None, sets, output_dir) -> ConfigError:
    """A config field's error raised after loading, with the file or `--set` that gave it."""
    from rankscope.config import sourced

    return sourced(e, config, _overrides(sets, output_dir))


@app.command()
def run(
    config: ConfigArg = None,
    set_: SetOpt = None,
    output_dir: OutOpt = None,
    force: Annotated[bool, typer.Option(help="Redo runs made with another config.")] = False,
    fail_fast: Annotated[bool, typer.Option(help="Stop at the first failed run.")] = False,
):
    """Run the sweep (train, evaluate, report); finished work is never redone."""
    from rankscope.pipeline import run_sweep
    from rankscope.progress import stages_for

    cfg = _load(config, set_, output_dir)
    checks.writable_dir(cfg.out_dir, "output directory")  # before any run is trained
    checks.report_targets(cfg.out_dir)
    console.print(f"[bold]rankscope[/bold] sweep [cyan]{cfg.name}[/cyan] -> {cfg.out_dir}")
    try:
        with stages_for(console) as stages:
            outcome = run_sweep(cfg, force=force, fail_fast=fail_fast, stages=stages)
    except ConfigError as e:  # `methods.lora.ranks: rank 512 exceeds ...`: which file / --set
        raise _sourced(e, config, set_, output_dir) from None
    console.print(
        f"{len(outcome.done)} run(s) done now, {len(outcome.skipped)} already done, "
        f"{len(outcome.failed)} failed"
    )
    if outcome.report:
        console.print(f"report: [green]{outcome.report['html']}[/green]")
    for msg in outcome.warnings:
        console.print(f"[yellow]warning:[/yellow] {msg}")
    if outcome.failed:
        table = Table("failed run", "reason")
        for rid, msg in outcome.failed.items():
            table.add_row(rid, msg)
        console.print(table)
        raise RunFailed(f"{len(outcome.failed)} run(s) failed; see the table above")


@app.command()
def plan(
    config: ConfigArg = None,
    set_: SetOpt = None,
    output_dir: OutOpt = None,
    peak_tflops: Annotated[
        float, typer.Option(help="GPU peak dense TFLOP/s for the estimate (H100 bf16: 989)")
    ] = 989.0,
    mfu: Annotated[float, typer.Option(help="Assumed model-FLOPs utilisation")] = 0.35,
    costs: Annotated[
        bool,
        typer.Option(
            help="Trainable parameters and GPU-hours, and the check that every LoRA rank and "
            "target fits the model, as `run` checks it (builds a meta model)"
        ),
    ] = True,
):
    """Show the grid: which runs exist, which are done, which are pending, and their cost."""
    from rankscope.plan import make_plan

    for name, value in (("--peak-tflops", peak_tflops), ("--mfu", mfu)):
        if not 0 < value < float("inf"):
            raise RankscopeError(f"{name}: must be a finite number > 0, got {value:g}")
    cfg = _load(config, set_, output_dir)
    runs = make_plan(cfg)
    if costs:
        try:
            plan_cli.check_fits(cfg)
        except ConfigError as e:
            raise _sourced(e, config, set_, output_dir) from None
    est = plan_cli.estimate(console, cfg, runs, peak_tflops, mfu) if costs else {}
    out = Console(width=max(170, Console().width))
    out.print(plan_cli.plan_table(cfg, runs, plan_cli.plan_states(cfg, runs, _state), est))
    if est:
        total = sum(c.gpu_hours for c in est.values())
        out.print(
            f"estimated total: {total:.3g} GPU-hours at {peak_tflops:g} TFLOP/s x {mfu:g} MFU "
            "(6N FLOPs/token full SFT, 4N LoRA, 2N eval; a planning figure, not a measurement)"
        )


@app.command()
def analyze(config: ConfigArg = None, set_: SetOpt = None, output_dir: OutOpt = None):
    """Spectral ΔW + attention analysis of a sweep's finished runs (resumes per module)."""
    from rankscope.pipeline import analyze_only
    from rankscope.progress import stages_for

    cfg = _load(config, set_, output_dir)
    with stages_for(console) as stages:
        analyze_only(cfg, stages)
    console.print(f"analysis rows stored in {cfg.out_dir / STORE_NAME}")


app.command("probe")(probe_command)  # predict the rank before the sweep: rankscope.probe


@app.command()
def report(out_dir: DirArg = Path("runs/toy")):
    """(Re)write report.md, report.html and figures from a sweep's results store."""
    from rankscope.pipeline import write_sweep_report

    checks.results_store(out_dir, _state)  # an empty store would overwrite a good report
    checks.report_targets(out_dir)
    paths = write_sweep_report(out_dir)
    console.print(f"report: [green]{paths['html']}[/green]")


@app.command()
def recommend(
    out_dir: DirArg = Path("runs/toy"),
    max_retention_loss: Annotated[
        float | None,
        typer.Option(help="Largest admissible mean retention cost, in percentage points."),
    ] = None,
    max_params: Annotated[
        int | None, typer.Option(help="Most trainable parameters a configuration may have.")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the decision as JSON here.")
    ] = None,
):
    """Which configuration to use: per train task, the Pareto front of in-domain gain vs
    retention cost, the recommendation within the limits and the equivalent ones."""
    import json

    from rankscope.report import load_report_data
    from rankscope.report.decision import Limits, decisions, to_dict
    from rankscope.report.headline import (
        confirmed_line,
        decision_line,
        excluded_line,
        options_table,
    )
    from rankscope.rundir import write_atomic

    if max_retention_loss is not None and not max_retention_loss >= 0:  # nan too
        raise RankscopeError(f"--max-retention-loss: must be >= 0 pp, got {max_retention_loss:g}")
    if max_params is not None and max_params < 0:
        raise RankscopeError(f"--max-params: must be >= 0, got {max_params}")
    store_path = checks.results_store(out_dir, _state)
    if json_path is not None:
        checks.writable_file(json_path, "--json")
    found = decisions(load_report_data(store_path), Limits(max_retention_loss, max_params))
    if not found:
        raise RankscopeError(
            f"{out_dir}: no train task has validation scores yet; nothing to recommend"
        )
    out = Console()
    for d in found:
        out.print(_rich_table(options_table(d)))
        lines = [decision_line(d), excluded_line(d), confirmed_line(d)]
        out.print("\n".join(_rich_markup(x) for x in lines if x) + "\n")
    if json_path is not None:
        write_atomic(json_path, json.dumps([to_dict(d) for d in found], indent=2) + "\n")
        console.print(f"decision: [green]{json_path}[/green]")


def _rich_markup(text: str) -> str:
    """The report's **bold** spans as rich markup, everything else escaped."""
    from rich.markup import escape

    parts = [escape(p) for p in text.split("**")]
    return "".join(f"[bold]{p}[/bold]" if i % 2 else p for i, p in enumerate(parts))


def _rich_table(t) -> Table:
    """A report table (rankscope.report.fmt.Table) as a rich table."""
    from rich.markup import escape

    table = Table(title=escape(t.caption), title_justify="left", title_style="italic")
    for j, col in enumerate(t.columns):
        table.add_column(col, justify="right" if t.is_numeric(j) else "left")
    for i, row in enumerate(t.rows):
        cells = [escape(c) for c in row]
        cells = [f"[bold]{c}[/bold]" if (i, j) in t.bold and c else c for j, c in enumerate(cells)]
        table.add_row(*cells)
    return table


@app.command()
def status(out_dir: DirArg = Path("runs/toy")):
    """Per run: pending / running / done / failed, with stage, progress and error."""
    from rankscope.store import Store

    sweep = SweepDir(out_dir)
    store = Store(checks.results_store(out_dir, _state), existing=True)
    run_ids = [r["run_id"] for r in store.runs()]
    store.close()
    if sweep.sweep_file.is_file():  # the plan also names the runs not started yet
        from rankscope.plan import make_plan
        from rankscope.sweep import read_sweep_file

        planned = [r.run_id for r in make_plan(read_sweep_file(out_dir))]
        run_ids = planned + [r for r in run_ids if r not in planned]
    table = Table("run id", "status", "stage", "progress", "error")
    counts: dict[str, int] = {}
    for rid in run_ids:
        s = sweep.run(rid).status()
        counts[s.state.value] = counts.get(s.state.value, 0) + 1
        table.add_row(rid, s.state.value, s.stage or "", s.progress, s.error or "")
    Console(width=max(160, Console().width)).print(table)
    console.print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())))


@app.command()
def reindex(
    out_dir: DirArg = Path("runs/toy"),
    force: Annotated[
        bool, typer.Option(help="Rebuild even if finished runs of the store would be dropped.")
    ] = False,
):
    """Rebuild the results store from the run directories (e.g. after losing it or after it
    was damaged: an unreadable store is moved aside, a run dir with a damaged file skipped)."""
    from rankscope.pipeline import reindex_sweep

    _state["store"] = out_dir / STORE_NAME

    def warn(msg: str) -> None:
        console.print(f"[yellow]warning:[/yellow] {escape(msg)}", highlight=False)

    n = reindex_sweep(out_dir, force=force, warn=warn)
    console.print(
        f"{out_dir / STORE_NAME}: rebuilt from {n} run director{'y' if n == 1 else 'ies'}"
    )


@app.command()
def export(out_dir: DirArg = Path("runs/toy")):
    """Export the results store's tables as CSV files into <dir>/csv/."""
    from rankscope.store import Store

    store_path = checks.results_store(out_dir, _state)
    checks.csv_targets(out_dir)
    store = Store(store_path, existing=True)
    paths = store.export_csv(out_dir / "csv")
    store.close()
    for p in paths:
        console.print(str(p))


@world_app.command("build")
def world_build(
    preset: Annotated[str, typer.Option(help="default | small")] = "default",
    seed: int = 0,
    cache_dir: Path | None = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if cached.")] = False,
):
    """Build the toy world's base model from its recipe (cached), and compare it with the
    shipped one: sweeps use the shipped weights wherever a world ships them."""
    from rankscope.progress import stages_for
    from rankscope.world.build import ensure_base_model
    from rankscope.world.generator import PRESETS, spec_for

    if preset not in PRESETS:
        raise RankscopeError(f"--preset: {preset!r} is not one of {', '.join(PRESETS)}")
    spec = spec_for(preset, seed)
    with stages_for(console) as stages:
        stages.start("pretrain", spec.pretrain_steps)
        path = ensure_base_model(
            spec, cache_dir, force=force, on_step=lambda s, n, loss: stages.advance("pretrain", 1)
        )
    from rankscope.world.shipped import compare_to_shipped

    console.print(f"toy base model: [green]{path}[/green]")
    console.print(compare_to_shipped(path, spec))


def main() -> None:
    """Entry point: user errors print one message and exit non-zero, without a traceback;
    usage errors (unknown option, bad value) print click's usage message and exit 2."""
    try:
        code = app(standalone_mode=False)
    except RankscopeError as e:
        if _state["debug"]:
            raise
        console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        code = 130
    except (typer.Abort, typer.Exit) as e:
        sys.exit(getattr(e, "exit_code", 1))
    except checks.usage_errors() as e:  # typer >= 0.22 raises its vendored click's
        checks.show_usage_error(e)
        sys.exit(getattr(e, "exit_code", 2))
    except Exception as e:  # the unexpected
        if _state["debug"]:
            raise
        sys.exit(checks.internal_error(console, e, _state))

    if code == 130:  # Ctrl-C (typer turns KeyboardInterrupt into exit code 130)
        console.print("[yellow]interrupted; rerun to resume[/yellow] (finished results are kept)")
        sys.exit(130)


if __name__ == "__main__":
    main()
