"""What many test modules need, written once: the store's content as comparable rows, and
the CLI run as a user runs it (a subprocess) or in-process (for monkeypatched failures).

A plain module, not a conftest (conftest names collide across test folders): import it as
`from helpers import call_cli, run_cli, store_rows`.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TABLES = ("runs", "metrics", "predictions", "train_log", "analysis", "fits", "meta")
"""The store's results; `ingested` is left out (bookkeeping of which file a row came from)."""

WRITTEN_AT = "updated_at"
"""When a row was written: differs even when the same run dirs are ingested again."""

EXECUTION = ("train_seconds", "tokens_per_second", "peak_memory_mb", "log_path")
"""How fast, how much memory and where the logs went: the record of one execution, which
another execution of the same run does not reproduce (only re-ingesting its files does)."""

PORTABLE = {
    "runs": "run_id, status, config_hash, error, trainable_params, total_params",
    "metrics": "run_id, task, metric, round(value, 6), round(stderr, 6), n",
    "predictions": "run_id, task, item_id, pred, gold, correct",
    "train_log": "run_id, step, round(loss, 4), lr",
}
"""What must agree whichever executor (process layout, thread count, machine) ran the runs:
float results rounded below their run-to-run noise; per-item details, epochs, paths and the
sweep's meta (it names the executor) left out."""


def store_rows(
    db: Path, *, exact: bool = True, timings: bool = False, sweep: Path | None = None
) -> dict[str, list[tuple]]:
    """The store's content as sorted rows per table, comparable between two stores.

    exact=True: every table and column as stored (bit for bit), except when rows were
    written and, unless `timings`, the execution record (`EXECUTION`); the sweep dir (`sweep`,
    default the store's folder) reads `<dir>`, so stores of two sweep dirs compare. For the
    same runs re-ingested (timings=True), rerun or resumed in the same environment.
    exact=False: the `PORTABLE` projection, for the same sweep run by another executor.
    The store must pass SQLite's integrity check either way."""
    root = str(sweep or Path(db).parent)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        if not exact:
            return {t: _sorted(conn.execute(f"SELECT {c} FROM {t}")) for t, c in PORTABLE.items()}
        skip = {WRITTEN_AT, *(() if timings else EXECUTION)}
        out = {}
        for table in TABLES:
            cur = conn.execute(f"SELECT * FROM {table}")
            keep = [i for i, d in enumerate(cur.description) if d[0] not in skip]
            rows = (tuple(_at(r[i], root) for i in keep) for r in cur)
            out[table] = _sorted(rows)
        return out
    finally:
        conn.close()


def _at(value: Any, root: str) -> Any:
    return value.replace(root, "<dir>") if isinstance(value, str) else value


def _sorted(rows: Any) -> list[tuple]:
    return sorted((tuple(r) for r in rows), key=repr)


def run_cli(
    *args: str,
    env: Mapping[str, str | None] | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """`python -m rankscope.cli *args` in a fresh process, as a user runs it. The
    environment is this one with COLUMNS=200 (one message per line) and `env` on top;
    a None value removes that variable."""
    full = {**os.environ, "COLUMNS": "200"}
    for key, value in (env or {}).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    return subprocess.run(
        [sys.executable, "-m", "rankscope.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full,
        timeout=timeout,
    )


def call_cli(monkeypatch: Any, capsys: Any, *args: str, stream: str = "all") -> tuple[Any, str]:
    """`rankscope *args` in this process (so monkeypatched failures reach the runs): the
    exit code (0 when main() returns) and what it printed to `stream` ('all', 'out' or
    'err'), whitespace collapsed so a message reads as one line at any terminal width."""
    from rankscope.cli import main

    monkeypatch.setattr(sys, "argv", ["rankscope", *args])
    monkeypatch.setenv("COLUMNS", "400")
    code: Any = 0
    try:
        main()
    except SystemExit as ex:
        code = ex.code
    captured = capsys.readouterr()
    text = {"out": captured.out, "err": captured.err}.get(stream, captured.out + captured.err)
    return code, " ".join(text.split())
