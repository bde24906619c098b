"""The rungs of successive halving as files: what the driver asks, what a worker leaves.

The driver (`rankscope.halving`) writes `<out>/halving.json` before each rung: the rung's
budget fraction and the runs it asks to train that far, plus the decisions made so far. A
worker (`rankscope.runner`) reads its run's target there, trains to
`rung_step(fraction, max_steps)` optimizer steps of the full run's schedule, keeps the Trainer
checkpoint, scores the validation split into `eval/val@<step>/<task>.json` and writes `RUNG`
({fraction, step, max_steps, val}) last. Promoting the run later resumes that checkpoint: a
rung is a prefix of the full run, so the finished run is the grid's own (same id, hash and
results). This module imports nothing of rankscope but the run-dir layout, so the worker,
the driver and the report (`report.stopped`, from the store's rows alone) all read it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from rankscope.rundir import SweepDir, read_text, write_atomic

RUNG_PREFIX = "val@"
"""A rung's validation split in the store and under eval/: `val@<step>`."""


def rung_split(step: int) -> str:
    return f"{RUNG_PREFIX}{step}"


def rung_step(fraction: float, total: int, every: int = 1) -> int:
    """The optimizer step a rung at `fraction` of `total` steps stops at: rounded up to a
    multiple of `every` (`train.logging_steps`, so the resumed run logs the same losses as an
    uninterrupted one: the Trainer averages the loss since its last log), at least 1, at
    most `total`."""
    step = math.ceil(round(fraction * total, 6))
    return max(1, min(total, math.ceil(step / every) * every))


def primary_value(metrics: dict[str, Any]) -> float | None:
    """A task's primary metric as the report chooses it: acc where a task has it, else
    em_strict (`report.data.primary_metrics`); each metric is [value, stderr, n]."""
    m = metrics.get("acc", metrics.get("em_strict"))
    return None if m is None or m[0] is None else float(m[0])


def read_state(sweep_dir: SweepDir) -> dict[str, Any]:
    text = read_text(sweep_dir.halving_file)
    return json.loads(text) if text else {}


def write_state(sweep_dir: SweepDir, state: dict[str, Any]) -> None:
    write_atomic(sweep_dir.halving_file, json.dumps(state, indent=1))


def rung_target(sweep_dir: SweepDir, search: str, run_id: str) -> float | None:
    """The budget fraction the driver asks of `run_id` (None: the whole budget)."""
    if search != "halving":
        return None
    rung = read_state(sweep_dir).get("rung") or {}
    fraction = rung.get("fraction")
    if fraction is None or fraction >= 1 or run_id not in rung.get("runs", []):
        return None
    return float(fraction)
