"""The results store: one SQLite file per sweep (WAL mode, one transaction per unit of results).

Keys are unique, so re-writing a unit replaces it instead of duplicating it. Only the driver
writes it: workers write files into their run directories, and the driver ingests them
(`rankscope.store.ingest`), so the store can always be rebuilt from the run directories. The
report reads only this file.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rankscope.errors import RankscopeError
from rankscope.rundir import atomic_open
from rankscope.store.schema import RUN_FIELDS, SCHEMA, migrate
from rankscope.store.schema import VERSION as SCHEMA_VERSION

TABLES = ("meta", "runs", "metrics", "predictions", "train_log", "analysis", "ingested", "fits")
EXPORTED = ("runs", "metrics", "predictions", "train_log", "analysis", "fits")


class StoreError(RankscopeError):
    """The results store file is missing, empty, damaged or not a rankscope store."""


def _rebuild_hint(path: Path, aside: bool = True) -> str:
    kept = " (the damaged file is kept aside)" if aside else ""
    return f"`rankscope reindex {path.parent}` rebuilds it from the run directories{kept}"


def damaged(path: Path, error: sqlite3.DatabaseError) -> StoreError:
    """The message for a store SQLite cannot read (garbage bytes, a truncated file)."""
    return StoreError(
        f"{path}: not a rankscope results store (SQLite: {error}); {_rebuild_hint(path)}"
    )


def _is_damage(error: sqlite3.DatabaseError) -> bool:
    """SQLite cannot read the file (not a database, malformed); not a lock or I/O problem."""
    return not isinstance(error, sqlite3.OperationalError)


def _file_problem(path: Path) -> str | None:
    """An existing `path` that is no store file: a directory, or empty (0 bytes)."""
    if not path.is_file():
        return f"{path}: not a file, so not a rankscope results store"
    if path.stat().st_size == 0:
        return (
            f"{path}: empty file (0 bytes), not a rankscope results store; delete it, or "
            f"{_rebuild_hint(path, aside=False)}"
        )
    return None


def store_problem(path: Path) -> str | None:
    """Why `path` is not a readable rankscope results store (missing, empty, not SQLite, a
    SQLite file without the store's tables), or None if it is one. Writes nothing."""
    path = Path(path)
    if not path.exists():
        return f"{path.parent}: no {path.name} here; run a sweep first"
    if problem := _file_problem(path):
        return problem
    conn = sqlite3.connect(path, timeout=60)
    try:
        q = "SELECT name FROM sqlite_master WHERE type='table'"
        tables = {row[0] for row in conn.execute(q)}
    except sqlite3.DatabaseError as e:
        if not _is_damage(e):
            raise
        return str(damaged(path, e))
    finally:
        conn.close()
    if not {"meta", "runs"} <= tables:
        return f"{path}: a SQLite file without the results tables, not a rankscope results store"
    return None


def _update_run(conn: sqlite3.Connection, run_id: str, fields: dict[str, Any]) -> None:
    fields = {**fields, "updated_at": time.time()}
    sets = ", ".join(f"{k}=?" for k in fields)
    conn.execute(f"UPDATE runs SET {sets} WHERE run_id=?", [*fields.values(), run_id])


class Store:
    """Thin typed access to the sweep's SQLite file."""

    def __init__(self, path: Path, *, existing: bool = False, empty_ok: bool = False):
        """Open the store at `path`, creating it if missing. Refused (StoreError, naming the
        file) before anything is written to it: a file SQLite cannot read; an empty file
        (0 bytes: no store, and a reader would fill it with empty tables) unless `empty_ok`
        (a sweep starting or a rebuild writes the store into it); with `existing`, also a
        missing file or a SQLite file without the store's tables."""
        self.path = Path(path)
        problem = None
        if existing:
            problem = store_problem(self.path)
        elif self.path.exists():
            problem = _file_problem(self.path)
        if problem and empty_ok and self.path.is_file() and self.path.stat().st_size == 0:
            problem = None
        if problem:
            raise StoreError(problem)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            self._setup()
        except sqlite3.DatabaseError as e:
            self.conn.close()
            if not _is_damage(e):
                raise
            raise damaged(self.path, e) from None

    def _setup(self) -> None:
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        if self.conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            with self.transaction() as c:
                migrate(c)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All writes inside commit together or not at all; a nested one joins the outer."""
        if self.conn.in_transaction:
            yield self.conn
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextmanager
    def savepoint(self) -> Iterator[sqlite3.Connection]:
        """Inside a transaction: the block's writes are undone alone when it raises (the
        transaction goes on); outside one it is a transaction of its own."""
        if not self.conn.in_transaction:
            with self.transaction() as c:
                yield c
            return
        self.conn.execute("SAVEPOINT unit")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK TO unit")
            self.conn.execute("RELEASE unit")
            raise
        self.conn.execute("RELEASE unit")

    # -------------------------------------------------------------- meta
    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, items: dict[str, str]) -> None:
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(items.items()))

    # -------------------------------------------------------------- runs
    def upsert_run(self, **fields: Any) -> None:
        """Insert a run row, or update the given fields of an existing one."""
        fields["updated_at"] = time.time()
        cols = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        updates = ", ".join(f"{k}=excluded.{k}" for k in fields if k != "run_id")
        with self.transaction() as c:
            c.execute(
                f"INSERT INTO runs ({cols}) VALUES ({marks}) "
                f"ON CONFLICT(run_id) DO UPDATE SET {updates}",
                list(fields.values()),
            )

    def forget_run(self, run_id: str) -> None:
        """Drop every row of one run (its results are redone from scratch)."""
        with self.transaction() as c:
            for table in ("runs", "metrics", "predictions", "train_log", "analysis", "ingested"):
                c.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))

    def clear(self) -> None:
        """Drop every row of every table (before a rebuild from the run directories)."""
        with self.transaction() as c:
            for table in TABLES:
                c.execute(f"DELETE FROM {table}")

    # -------------------------------------------------------------- ingestion
    def ingested(self, run_id: str) -> dict[str, str]:
        """{unit: signature} of the run-dir files already loaded for this run."""
        q = "SELECT unit, sig FROM ingested WHERE run_id=?"
        return dict(self.conn.execute(q, (run_id,)).fetchall())

    def mark_ingested(self, run_id: str, unit: str, sig: str) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO ingested VALUES (?, ?, ?)", (run_id, unit, sig))

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Update some fields of an existing run row."""
        with self.transaction() as c:
            _update_run(c, run_id, fields)

    def run(self, run_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return dict(row) if row else None

    def runs(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM runs ORDER BY run_id")]

    def save_train_result(
        self, run_id: str, fields: dict[str, Any], log: Iterable[dict[str, float]]
    ) -> None:
        """The train stage's rows for one run, in one transaction."""
        fields = {k: v for k, v in fields.items() if k in RUN_FIELDS}
        with self.transaction() as c:
            _update_run(c, run_id, fields)
            c.execute("DELETE FROM train_log WHERE run_id=?", (run_id,))
            c.executemany(
                "INSERT INTO train_log VALUES (?, ?, ?, ?, ?)",
                [(run_id, r["step"], r.get("loss"), r.get("lr"), r.get("epoch")) for r in log],
            )

    def train_log(self) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in self.conn.execute(
                "SELECT run_id, step, loss, lr, epoch FROM train_log ORDER BY run_id, step"
            )
        ]

    # -------------------------------------------------------------- evaluation
    def has_metrics(self, run_id: str, task: str, split: str = "test") -> bool:
        q = "SELECT 1 FROM metrics WHERE run_id=? AND task=? AND split=? LIMIT 1"
        return self.conn.execute(q, (run_id, task, split)).fetchone() is not None

    def save_eval(
        self,
        run_id: str,
        task: str,
        metrics: dict[str, tuple[float, float, int]],
        predictions: list[dict[str, Any]],
        split: str = "test",
    ) -> None:
        """Metrics and per-item predictions of one (run, task, split), in one transaction."""
        key = (run_id, task, split)
        with self.transaction() as c:
            c.execute("DELETE FROM metrics WHERE run_id=? AND task=? AND split=?", key)
            c.execute("DELETE FROM predictions WHERE run_id=? AND task=? AND split=?", key)
            c.executemany(
                "INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(run_id, task, split, k, v, se, n) for k, (v, se, n) in metrics.items()],
            )
            c.executemany(
                "INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        run_id,
                        task,
                        split,
                        p["item_id"],
                        str(p["pred"]),
                        str(p["gold"]),
                        int(p["correct"]),
                        json.dumps(p.get("detail")) if p.get("detail") is not None else None,
                    )
                    for p in predictions
                ],
            )

    def metrics(self) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in self.conn.execute("SELECT * FROM metrics ORDER BY run_id, task, split, metric")
        ]

    def predictions(self, run_id: str, task: str, split: str = "test") -> list[dict[str, Any]]:
        q = "SELECT * FROM predictions WHERE run_id=? AND task=? AND split=? ORDER BY item_id"
        return [dict(r) for r in self.conn.execute(q, (run_id, task, split))]

    def correctness(self) -> Iterator[tuple[str, str, str, str, float]]:
        """(run_id, task, split, item_id, correct) of every scored item, in one query (the
        report's paired tests read these; `detail` is left unread)."""
        q = (
            "SELECT run_id, task, split, item_id, correct FROM predictions "
            "WHERE correct IS NOT NULL ORDER BY run_id, task, split, item_id"
        )
        for run_id, task, split, item_id, correct in self.conn.execute(q):
            yield run_id, task, split, str(item_id), float(correct)

    def chance_levels(self) -> dict[str, float]:
        """Per MCQ task: the accuracy of a uniform random guess, mean of 1 / (options) over
        its items, read from one run's predictions (every run sees the same items)."""
        q = (
            "SELECT task, detail FROM predictions WHERE split = 'test' AND (run_id, task) IN "
            "(SELECT MIN(run_id), task FROM predictions WHERE split = 'test' GROUP BY task)"
        )
        inv: dict[str, list[float]] = {}
        for task, detail in self.conn.execute(q):
            lps = json.loads(detail).get("logprobs") if detail else None
            if isinstance(lps, list) and len(lps) > 1:  # MCQ: one log-prob per option
                inv.setdefault(task, []).append(1.0 / len(lps))
        return {t: sum(v) / len(v) for t, v in sorted(inv.items())}

    # -------------------------------------------------------------- analysis
    def has_analysis(self, run_id: str, kind: str, module: str | None = None) -> bool:
        q = "SELECT 1 FROM analysis WHERE run_id=? AND kind=?"
        args: list[Any] = [run_id, kind]
        if module is not None:
            q += " AND module=?"
            args.append(module)
        return self.conn.execute(q + " LIMIT 1", args).fetchone() is not None

    def save_analysis(self, rows: list[tuple[str, str, str, int, int, str, float]]) -> None:
        """Rows (run_id, kind, module, layer, head, metric, value), in one transaction."""
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO analysis VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def analysis(self, kind: str | None = None) -> list[dict[str, Any]]:
        q, args = "SELECT * FROM analysis", ()
        if kind:
            q, args = q + " WHERE kind=?", (kind,)
        return [dict(r) for r in self.conn.execute(q + " ORDER BY run_id, module, layer", args)]

    # -------------------------------------------------------------- fits
    def save_fits(self, rows: list[tuple[str, str, str, str, str, float]]) -> None:
        """Rows (train_task, method, variant, module, metric, value), in one transaction."""
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO fits VALUES (?, ?, ?, ?, ?, ?)", rows)

    def fits(self) -> list[dict[str, Any]]:
        q = "SELECT * FROM fits ORDER BY train_task, method, variant, module, metric"
        return [dict(r) for r in self.conn.execute(q)]

    # -------------------------------------------------------------- export
    def export_csv(self, out_dir: Path) -> list[Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for table in EXPORTED:
            cur = self.conn.execute(f"SELECT * FROM {table}")
            path = out_dir / f"{table}.csv"
            with atomic_open(path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow([d[0] for d in cur.description])
                w.writerows(cur)
            paths.append(path)
        return paths
