"""Ingestion: a run directory's files into the store (the driver's job, never a worker's).

Workers write files; only the driver writes SQLite, so the store is never written from another
machine and can always be rebuilt from the run directories (`rankscope reindex`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from rankscope.errors import DataError
from rankscope.interrupts import kill_point
from rankscope.rundir import Marker, RunDir, RunState, read_text
from rankscope.store.db import Store

SPEC_FIELDS = ("run_id", "method", "train_task", "rank", "alpha", "lr", "seed", "variant")

Loader = Callable[[Store, str, Path], None]

UNREADABLE = (ValueError, KeyError, TypeError, IndexError, AttributeError, yaml.YAMLError)
"""What reading a damaged run-dir file raises (bad JSON/YAML, missing keys, wrong shapes)."""


def _unreadable(path: Path, error: Exception) -> DataError:
    why = f"{type(error).__name__}: {error}"
    return DataError(f"{path}: unreadable results file ({why})")


def _sig(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _load_train(store: Store, run_id: str, path: Path) -> None:
    rec = json.loads(path.read_text())
    log_path = path.parent / Marker.TRAIN_LOG
    try:
        log = [json.loads(x) for x in (read_text(log_path) or "").splitlines() if x]
    except ValueError as e:
        raise _unreadable(log_path, e) from e
    store.save_train_result(run_id, rec, log)


def _load_eval(store: Store, run_id: str, path: Path) -> None:
    doc = json.loads(path.read_text())
    metrics = {k: tuple(v) for k, v in doc["metrics"].items()}
    store.save_eval(run_id, doc["task"], metrics, doc["predictions"], doc.get("split", "test"))


def _load_analysis(store: Store, run_id: str, path: Path) -> None:
    store.save_analysis([tuple(r) for r in json.loads(path.read_text())])


def _units(rd: RunDir) -> list[tuple[str, Path, Loader]]:
    """(unit name, file, loader) of every unit of results the run dir holds."""
    units: list[tuple[str, Path, Loader]] = []
    if (rd / Marker.TRAINED).is_file():
        units.append((Marker.TRAINED, rd / Marker.TRAINED, _load_train))
    units += [(str(p.relative_to(rd.path)), p, _load_eval) for p in rd.eval_files()]
    units += [(f"{Marker.ANALYSIS}/{p.name}", p, _load_analysis) for p in rd.analysis_files()]
    return units


def ingest_run(store: Store, run_dir: Path | RunDir) -> None:
    """Load the units of results a run dir holds into the store, in one transaction.

    Idempotent: unique keys replace rows, and a file already loaded (same size and mtime) is
    skipped, so calling it after every unit costs little.
    """
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
    row = _run_row(rd)
    if row is None:
        return
    run_id = row["run_id"]
    with store.transaction():
        store.upsert_run(**row)
        have = store.ingested(run_id)
        for unit, path, load in _units(rd):
            sig = _sig(path)
            if have.get(unit) != sig:
                try:
                    load(store, run_id, path)
                except UNREADABLE as e:
                    raise _unreadable(path, e) from e
                store.mark_ingested(run_id, unit, sig)
        kill_point("store")  # a crash here must leave the store as it was


def _run_row(rd: RunDir) -> dict[str, Any] | None:
    """The run's row from its config.yaml and markers (None before the run started); a
    damaged file is a DataError naming it."""
    try:
        info = rd.config_info()
    except UNREADABLE as e:
        raise _unreadable(rd / Marker.CONFIG, e) from e
    if info is None:
        return None
    try:
        return _row(rd, info)
    except UNREADABLE as e:
        raise DataError(f"{rd.path}: unreadable run directory ({type(e).__name__}: {e})") from e


def _row(rd: RunDir, info: dict[str, Any]) -> dict[str, Any]:
    spec, status = info["run"], rd.status()
    failed = status.state is RunState.FAILED
    stopped = status.state is RunState.STOPPED
    row = {
        **{k: spec[k] for k in SPEC_FIELDS},
        "replay": spec.get("replay", 0.0),  # run dirs from before replay have none: 0
        "model": info["config"]["model"]["name"],
        "config_hash": info["config_hash"],
        "run_dir": str(rd.path),
        "log_path": str(rd / Marker.ERROR) if failed else str(rd.path),
        "status": status.state.value,
        "stage": status.stage,
        "error": status.error,
        "budget_fraction": (rd.rung() or {}).get("fraction") if stopped else None,
    }
    return row
