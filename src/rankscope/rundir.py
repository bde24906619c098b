"""The sweep's output directory and each run's directory: names, markers, atomic writes, state.

A run directory is the unit of truth: a worker (any process, any machine) writes only into
its own, every file atomically (temp file + rename), so a killed worker leaves old files or new
ones, never half of one; the driver, `rankscope status` and the store's ingestion read it back.
This module is the one place that knows the layout, so they cannot disagree about it:

<out>/: results.sqlite (the store), sweep.yaml (the resolved config workers read), LOCK (the
driver's), decontamination.json (training items dropped for overlapping eval items),
halving.json (an adaptive sweep's rungs and decisions, `rankscope.halving`),
logs/<run_id>.log (GPU subprocesses), report/, runs/<run_id>/: config.yaml, RUNNING (host
and pid while a worker runs it), progress.json, trainer/checkpoint-N/, adapter/ | model/,
train_log.jsonl, TRAINED, eval/<task>.json, analysis/<kind>__<module>.json,
analysis_error.txt, error.txt (a failure), DONE (written last: it holds the config hash the
run finished with); a run stopped at a rung of successive halving: eval/val@<step>/<task>.json
and RUNG, its checkpoint kept in trainer/.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO, Any

import yaml

from rankscope.interrupts import kill_point

STORE_NAME = "results.sqlite"
SWEEP_FILE = "sweep.yaml"
LOCK_NAME = "LOCK"
DECONTAM_FILE = "decontamination.json"
HALVING_FILE = "halving.json"
RUNS = "runs"
LOGS = "logs"


class Marker:
    """File and directory names inside runs/<run_id>/."""

    CONFIG = "config.yaml"
    RUNNING = "RUNNING"
    PROGRESS = "progress.json"
    TRAIN_LOG = "train_log.jsonl"
    TRAINED = "TRAINED"
    RUNG = "RUNG"  # trained to a rung of successive halving and scored there (`rankscope.rungs`)
    DONE = "DONE"
    ERROR = "error.txt"
    ANALYSIS_ERROR = "analysis_error.txt"
    TRAINER = "trainer"
    EVAL = "eval"
    ANALYSIS = "analysis"


# ------------------------------------------------------------------ atomic writes
def write_atomic(path: Path, text: str) -> None:
    """Write via a temp file and a rename: readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        kill_point("file")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """A file opened for writing at a temp name, renamed over `path` when the block ends
    without an error (and removed when it raises)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open(mode, **kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_dir_atomic(target: Path, write: Callable[[Path], None], suffix: str = ".tmp") -> None:
    """Fill a directory through `write(tmp_dir)`, then put it at `target` (`replace_dir`)."""
    tmp = target.with_name(target.name + suffix)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(src: Path, target: Path) -> None:
    """Put directory `src` at `target`: the old one is renamed aside first and removed last,
    so at every moment `target` is the whole old directory or the whole new one (or, for an
    instant between two renames, absent; never a mix)."""
    old = target.with_name(f"{target.name}.old{os.getpid()}.tmp")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(src, target)
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------ reading
def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None


def first_line(path: Path) -> str | None:
    text = read_text(path)
    return text.strip().splitlines()[0] if text and text.strip() else None


class RunState(str, Enum):
    """What a run is, in the words `rankscope status`/`plan` show and the store keeps."""

    PENDING = "pending"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    DONE = "done"
    STALE = "stale"  # finished with another config
    CHANGED = "changed"  # unfinished work made with another config
    STOPPED = "stopped"  # at a rung of successive halving: part of the budget, checkpoint kept

    def __str__(self) -> str:  # the word itself, on every Python version
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass(frozen=True)
class RunStatus:
    """A run directory read back: its state, the stage it is in, its progress, an error."""

    state: RunState
    stage: str | None
    progress: str
    error: str | None


@dataclass(frozen=True)
class SweepDir:
    """A sweep's output directory."""

    root: Path

    @property
    def store_path(self) -> Path:
        return self.root / STORE_NAME

    @property
    def sweep_file(self) -> Path:
        return self.root / SWEEP_FILE

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_NAME

    @property
    def decontam_file(self) -> Path:
        """Training items dropped for overlapping eval items (`rankscope.decontam`)."""
        return self.root / DECONTAM_FILE

    @property
    def halving_file(self) -> Path:
        """An adaptive sweep's rungs, the runs of the current one and the decisions made."""
        return self.root / HALVING_FILE

    def log(self, run_id: str) -> Path:
        return self.root / LOGS / f"{run_id}.log"

    def run(self, run_id: str) -> RunDir:
        return RunDir(self.root / RUNS / run_id)

    def run_dirs(self) -> list[RunDir]:
        """The run directories a worker has started (they hold config.yaml), sorted."""
        found = sorted(p for p in (self.root / RUNS).glob("*") if (p / Marker.CONFIG).is_file())
        return [RunDir(p) for p in found]


def _alive(running: dict[str, Any]) -> bool:
    """A RUNNING marker's worker is alive (only checkable on its own host)."""
    if running.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(running["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stopped_progress(rung: dict[str, Any]) -> str:
    """A stopped run's progress as `status` shows it: its step and budget fraction."""
    return f"stopped at step {rung['step']}/{rung['max_steps']} ({rung['fraction']:.3g} of budget)"


@dataclass(frozen=True)
class RunDir:
    """runs/<run_id>/: what a worker writes and what everyone else reads back."""

    path: Path

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def trainer(self) -> Path:
        return self.path / Marker.TRAINER

    def eval_file(self, task: str, split: str = "test") -> Path:
        """eval/<task>.json (test split) or eval/<split>/<task>.json (val)."""
        sub = "" if split == "test" else f"{split}/"
        return self.path / Marker.EVAL / f"{sub}{task}.json"

    def eval_files(self) -> list[Path]:
        """Every eval file: test splits, then validation splits."""
        ev = self.path / Marker.EVAL
        rungs = sorted(ev.glob("val@*/*.json"))  # validation at a rung of successive halving
        return sorted(ev.glob("*.json")) + sorted(ev.glob("val/*.json")) + rungs

    def analysis_files(self) -> list[Path]:
        return sorted(self.path.glob(f"{Marker.ANALYSIS}/*.json"))

    # -------------------------------------------------------------- reading
    def config_info(self) -> dict[str, Any] | None:
        """config.yaml (run spec, config hash, resolved config), None before the run starts."""
        text = read_text(self.path / Marker.CONFIG)
        return yaml.safe_load(text) if text else None

    def done_hash(self) -> str | None:
        """The config hash DONE holds (None: not finished)."""
        return read_text(self.path / Marker.DONE)

    def is_trained(self) -> bool:
        return (self.path / Marker.TRAINED).exists()

    def rung(self) -> dict[str, Any] | None:
        """RUNG: the rung of successive halving the run was last trained to (fraction, step,
        max_steps, val), None if it never stopped at one."""
        text = read_text(self.path / Marker.RUNG)
        return json.loads(text) if text else None

    def reached(self) -> bool:
        """The worker did what it was asked: DONE, or stopped at its rung (RUNG)."""
        return self.done_hash() is not None or self.rung() is not None

    def status(self) -> RunStatus:
        """pending | running | interrupted | failed | done | stale, with stage, progress, error.

        Read from the run dir's files only, so it is true for workers on other machines too.
        """
        info = self.config_info()
        if info is None:
            return RunStatus(RunState.PENDING, None, "", None)
        tasks = info["config"]["tasks"]["eval"]
        evaluated = [t for t in tasks if self.eval_file(t).exists()]
        stage, progress = "analyze", f"{len(self.analysis_files())} analysis files"
        if not self.is_trained():
            stage, progress = "train", self._train_progress()
        elif len(evaluated) < len(tasks):
            stage, progress = "evaluate", f"{len(evaluated)}/{len(tasks)} tasks"
        done, error = self.done_hash(), first_line(self.path / Marker.ANALYSIS_ERROR)
        err = self.path / Marker.ERROR
        if done is not None:
            state = RunState.DONE if done == info["config_hash"] else RunState.STALE
            stage, progress = None, f"{len(tasks)}/{len(tasks)} tasks"
        elif err.exists():
            state, error = RunState.FAILED, f"{first_line(err)} (log: {err})"
        else:
            running = read_text(self.path / Marker.RUNNING)
            alive = running and _alive(json.loads(running))
            state = RunState.RUNNING if alive else RunState.INTERRUPTED
            if not alive and (rung := self.rung()) is not None and not self.is_trained():
                state, progress = RunState.STOPPED, stopped_progress(rung)
        return RunStatus(state, stage, progress, error)

    def _train_progress(self) -> str:
        doc = read_text(self.path / Marker.PROGRESS)
        if doc:
            p = json.loads(doc)
            return f"step {p['step']}/{p['total']}"
        states = sorted(self.trainer.glob("checkpoint-*/trainer_state.json"), key=os.path.getmtime)
        if states:
            s = json.loads(states[-1].read_text())
            return f"step {s['global_step']}/{s['max_steps']} (checkpoint)"
        return ""

    def failure(self) -> str | None:
        """The failure message of a failed run, with the path of its log."""
        status = self.status()
        return status.error if status.state is RunState.FAILED else None

    # -------------------------------------------------------------- writing (the worker)
    def write(self, name: str, text: str) -> None:
        write_atomic(self.path / name, text)

    def start(self, config_hash: str) -> bool:
        """Tidy what a killed worker left and forget work of another config; returns whether
        config.yaml must be (re)written."""
        old = (self.config_info() or {}).get("config_hash")
        if old is not None and old != config_hash:
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.remove_leftovers()
        (self.path / Marker.ERROR).unlink(missing_ok=True)  # a retry of a failed run
        return old != config_hash

    def claim(self) -> None:
        """RUNNING: this host and pid work on the run (`status` tells a dead worker)."""
        running = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
        self.write(Marker.RUNNING, json.dumps(running))

    def release(self) -> None:
        (self.path / Marker.RUNNING).unlink(missing_ok=True)

    def mark_done(self, config_hash: str) -> None:
        """DONE, written last: the run is complete for this config."""
        self.write(Marker.DONE, config_hash)

    def write_error(self, name: str, message: str, trace: str) -> None:
        """error.txt or analysis_error.txt: the message on the first line, then the trace."""
        self.write(name, f"{message}\n\n{trace}")

    def remove_leftovers(self) -> None:
        """Temp files and dirs a killed worker left behind (nobody else writes this dir)."""
        for p in sorted(self.path.rglob("*.tmp"), reverse=True):
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)

    def drop_train_state(self) -> None:
        """Checkpoints and live progress are no longer needed once TRAINED exists."""
        shutil.rmtree(self.trainer, ignore_errors=True)
        (self.path / Marker.PROGRESS).unlink(missing_ok=True)


class AnalysisFiles:
    """A run's analysis rows as files analysis/<kind>__<module>.json, one per saved unit."""

    COLUMNS = ("run_id", "kind", "module", "layer", "head", "metric", "value")

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / Marker.ANALYSIS
        self.rows: list[tuple[Any, ...]] = []
        for p in sorted(self.dir.glob("*.json")):
            self.rows += [tuple(r) for r in json.loads(p.read_text())]

    def has_analysis(self, run_id: str, kind: str, module: str | None = None) -> bool:
        return any(r[0] == run_id and r[1] == kind and module in (None, r[2]) for r in self.rows)

    def save_analysis(self, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            name = f"{rows[0][1]}__{rows[0][2]}.json"
            write_atomic(self.dir / name, json.dumps([list(r) for r in rows]))
            self.rows += rows

    def analysis(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [dict(zip(self.COLUMNS, r, strict=True)) for r in self.rows if kind in (None, r[1])]
