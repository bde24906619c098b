"""Progress: rich bars while a sweep runs here; a run's stage and progress read from its files.

The bars are one per stage with ETA, plus one for the current unit of work. `unit_state`
reads a run directory (see `rankscope.runner`), which is what `rankscope status` shows.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from rankscope.pipeline import Stages


@contextmanager
def rich_stages(console: Console) -> Iterator[Stages]:
    progress = Progress(
        TextColumn("{task.description:<44}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    bars: dict[str, int] = {}
    current: dict[str, int] = {}

    def start(stage: str, total: int) -> None:
        bars[stage] = progress.add_task(stage, total=total)

    def advance(stage: str, n: int) -> None:
        if stage in bars:
            progress.advance(bars[stage], n)

    def step(label: str, done: int, total: int) -> None:
        if "id" not in current:
            current["id"] = progress.add_task(label, total=total)
        progress.update(current["id"], description=label[:44], completed=done, total=total)

    def note(msg: str) -> None:
        progress.console.print(msg)

    with progress:
        yield Stages(start=start, advance=advance, step=step, note=note)


# ------------------------------------------------------------------ a run dir's progress
def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None


def first_line(path: Path) -> str | None:
    text = read_text(path)
    return text.strip().splitlines()[0] if text and text.strip() else None


def config_info(rdir: Path) -> dict[str, Any] | None:
    """The run's config.yaml (run spec, config hash, resolved config), None before it starts."""
    text = read_text(rdir / "config.yaml")
    return yaml.safe_load(text) if text else None


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


def _train_progress(rdir: Path) -> str:
    doc = read_text(rdir / "progress.json")
    if doc:
        p = json.loads(doc)
        return f"step {p['step']}/{p['total']}"
    states = sorted(rdir.glob("trainer/checkpoint-*/trainer_state.json"), key=os.path.getmtime)
    if states:
        s = json.loads(states[-1].read_text())
        return f"step {s['global_step']}/{s['max_steps']} (checkpoint)"
    return ""


def unit_state(rdir: Path) -> dict[str, Any]:
    """status (pending | running | interrupted | failed | done | stale), stage, progress, error.

    Read from the run dir's files only, so it is true for workers on other machines too.
    """
    info = config_info(rdir)
    if info is None:
        return {"status": "pending", "stage": None, "progress": "", "error": None}
    tasks = info["config"]["tasks"]["eval"]
    evaluated = [t for t in tasks if (rdir / "eval" / f"{t}.json").exists()]
    stage, progress = "analyze", f"{len(list(rdir.glob('analysis/*.json')))} analysis files"
    if not (rdir / "TRAINED").exists():
        stage, progress = "train", _train_progress(rdir)
    elif len(evaluated) < len(tasks):
        stage, progress = "evaluate", f"{len(evaluated)}/{len(tasks)} tasks"
    done, error = read_text(rdir / "DONE"), first_line(rdir / "analysis_error.txt")
    if done is not None:
        status = "done" if done == info["config_hash"] else "stale"
        stage, progress = None, f"{len(tasks)}/{len(tasks)} tasks"
    elif (rdir / "error.txt").exists():
        status, error = "failed", f"{first_line(rdir / 'error.txt')} (log: {rdir / 'error.txt'})"
    else:
        running = read_text(rdir / "RUNNING")
        status = "running" if running and _alive(json.loads(running)) else "interrupted"
    return {"status": status, "stage": stage, "progress": progress, "error": error}
