"""The rungs of successive halving as files: what the driver asks, what a worker leaves.

The driver (`rankscope.halving`) writes `<out>/halving.json` before each rung: the rung's
budget fraction and the runs it asks to train that far, plus the decisions made so far. A
worker (`rankscope.runner`) reads its run's target there, trains to
`rung_step(fraction, max_steps)` optimizer steps of the full run's schedule, keeps the Trainer
checkpoint, scores the validation split into `eval/val@<step>/<task>.json` and writes `RUNG`
({fraction, step, max_steps, val}) last. Promoting the run later resumes that checkpoint: a
rung is a prefix of the full run, so the finished run is the grid's own (same id, hash and
results). This module imports nothing of rankscope but the run-dir layout, so the worker,
the driver and the report (`stopped_arms`, from the store's rows alone) all read it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
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


def arm_label(run_id: str) -> str:
    """The arm's name: the run id without train task and seed (`lora-r8-a16-lr1e-3`)."""
    parts = run_id.split("__")
    return parts[1] if len(parts) == 3 else run_id


# ------------------------------------------------------------------ for the report
@dataclass(frozen=True)
class StoppedArm:
    """An arm successive halving stopped: its runs (seeds) and the budget they reached."""

    train_task: str
    arm: str
    run_ids: tuple[str, ...]
    budget_fraction: float | None
    val: float | None = None
    """Mean over seeds of the primary validation score on the train task at that rung."""


def stopped_arms(
    runs: list[dict[str, Any]], metrics: list[dict[str, Any]] | None = None
) -> list[StoppedArm]:
    """What the report lists about stopped arms, from the store's rows alone (`Store.runs()`,
    and optionally `Store.metrics()` for the rung's validation score): one entry per arm with
    status `stopped`, by train task then arm. Their results are never in the selection or the
    recommendation (those read `done` runs only)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in runs:
        if r.get("status") == "stopped":
            cols = ("train_task", "method", "rank", "alpha", "lr", "variant")
            key = (*(r[c] for c in cols), r.get("replay") or 0.0)
            groups.setdefault(key, []).append(r)
    out = []
    for key, rows in groups.items():
        ids = tuple(sorted(r["run_id"] for r in rows))
        fractions = {r.get("budget_fraction") for r in rows}
        fraction = fractions.pop() if len(fractions) == 1 else None
        out.append(
            StoppedArm(key[0], arm_label(ids[0]), ids, fraction, _rung_val(metrics, ids, key[0]))
        )
    return sorted(out, key=lambda a: (a.train_task, a.arm))


def _rung_val(metrics: list[dict[str, Any]] | None, ids: tuple[str, ...], task: str) -> Any:
    """Mean over the runs of their last rung's primary validation score on `task`."""
    if not metrics:
        return None
    last: dict[str, tuple[int, dict[str, Any]]] = {}
    for m in metrics:
        split = m.get("split") or ""
        if m["run_id"] in ids and m["task"] == task and split.startswith(RUNG_PREFIX):
            step = int(split[len(RUNG_PREFIX) :])
            if m["run_id"] not in last or step > last[m["run_id"]][0]:
                last[m["run_id"]] = (step, {})
            if step == last[m["run_id"]][0]:
                last[m["run_id"]][1][m["metric"]] = (m["value"], m.get("stderr"), m.get("n"))
    vals = [primary_value(v) for _, v in last.values()]
    if len(vals) != len(ids) or any(v is None for v in vals):
        return None
    return sum(vals) / len(vals)  # type: ignore[arg-type]
