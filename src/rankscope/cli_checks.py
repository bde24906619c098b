"""What the command line checks before a command does any work, and how it shows an error.

A command that reads a sweep's results store refuses a missing, empty or damaged one before
touching it; a command that writes refuses an output path it could not write (a file where a
directory goes, a directory where a file goes) before it computes anything; a usage error
(an unknown option, a bad value) prints click's usage message and exits 2.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from rankscope.errors import RankscopeError
from rankscope.rundir import STORE_NAME


def results_store(out_dir: Path, state: dict[str, Any] | None = None) -> Path:
    """The sweep's results store, refused (exit 2, naming the file) when it is missing,
    empty, not SQLite or not a rankscope store; nothing is written to it."""
    from rankscope.store import StoreError, store_problem

    path = Path(out_dir) / STORE_NAME
    if state is not None:
        state["store"] = path
    problem = store_problem(path)
    if problem:
        raise StoreError(problem)
    return path


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest existing one of `path` and the folders above it, if it is not a
    directory (then nothing can be created under it)."""
    for p in (path, *path.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def writable_dir(path: Path, what: str) -> None:
    """`path` is a directory or can be made one: refused when it, or a folder above it, is
    a file."""
    path = Path(path)
    if (p := _file_in_the_way(path)) is not None:
        where = "" if p == path else f"{p} "
        raise RankscopeError(f"{what} {path}: {where}is a file, not a directory")


def writable_file(path: Path, what: str) -> None:
    """`path` can be written as a file: refused when it is a directory, or a folder it goes
    into is a file."""
    path = Path(path)
    if path.is_dir():
        raise RankscopeError(f"{what} {path}: is a directory; give a file path")
    if (p := _file_in_the_way(path.parent)) is not None:
        raise RankscopeError(f"{what} {path}: {p} is a file, not a directory")


def report_targets(out_dir: Path) -> None:
    """`<dir>/report/` and the files the report writes there can be written."""
    from rankscope.report.render import TEX_NAME

    report = Path(out_dir) / "report"
    writable_dir(report, "report directory")
    for name in ("report.md", "report.html", TEX_NAME):
        writable_file(report / name, "report file")


def csv_targets(out_dir: Path) -> None:
    """`<dir>/csv/` and the CSV files `export` writes there can be written."""
    from rankscope.store.db import EXPORTED

    csv = Path(out_dir) / "csv"
    writable_dir(csv, "export directory")
    for table in EXPORTED:
        writable_file(csv / f"{table}.csv", "export file")


def usage_errors() -> tuple[type[BaseException], ...]:
    """click's usage-error class: typer >= 0.22 vendors click (`typer._click`), older ones
    use click itself; both, where both are installed."""
    kinds: list[type[BaseException]] = []
    try:
        from typer._click.exceptions import ClickException as Vendored

        kinds.append(Vendored)
    except ImportError:
        pass
    try:
        import click

        kinds.append(click.ClickException)
    except ImportError:
        pass
    return tuple(kinds)


def show_usage_error(error: Any) -> None:
    """Print a usage error as typer does in standalone mode (usage line, hint, message);
    'no arguments' has printed the help already."""
    try:
        from typer.rich_utils import rich_format_error
    except ImportError:
        error.show()
        return
    rich_format_error(error)


def internal_error(console: Console, error: Exception, state: dict[str, Any]) -> int:
    """Show an unexpected error in one line; the exit code. A store SQLite cannot read
    (found only by a query, past the opening checks) is a user error (2) naming the file."""
    if isinstance(error, sqlite3.DatabaseError) and not isinstance(error, sqlite3.OperationalError):
        store = state.get("store") or f"the sweep's {STORE_NAME}"
        console.print(
            f"[red]error:[/red] {escape(str(store))}: damaged results store (SQLite: "
            f"{escape(str(error))}); `rankscope reindex DIR` rebuilds it from the run "
            "directories (the damaged file is kept aside)",
            highlight=False,
        )
        return 2
    console.print(
        f"[red]internal error:[/red] {type(error).__name__}: {escape(str(error))} (rerun with "
        "--debug for the traceback)",
        highlight=False,
    )
    return 1
