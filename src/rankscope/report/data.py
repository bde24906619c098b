"""The sweep's rows as the report reads them, and the per-run and per-configuration scores.

Every function here is pure: it takes plain rows (dicts as :class:`rankscope.store.Store`
returns them) and gives back lists of small dataclasses. Runs are grouped by their typed
columns (train task, :class:`MethodKey`, seed), never by a label or a run id. Scores are
fractions in [0, 1]; the tables show them as % (levels) and pp (changes).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rankscope.report.keys import Keyed, MethodKey, Row
from rankscope.rundir import RunState
from rankscope.rungs import RUNG_PREFIX
from rankscope.stats import Interval, mean_ci

TEST = "test"
VAL = "val"
STOPPED = RunState.STOPPED.value


def split_of(row: Row) -> str:
    """The split a metrics / predictions row belongs to; stores from before the ``split``
    column hold test rows only."""
    return row.get("split") or TEST


def on_split(rows: Iterable[Row], split: str) -> list[Row]:
    return [r for r in rows if split_of(r) == split]


# ------------------------------------------------------------------ runs
def _run_sort_key(run: Row) -> tuple:
    return (
        *MethodKey.of(run).sort_key,
        run.get("train_task") or "",
        run.get("seed") or 0,
        run["run_id"],
    )


def sort_runs(runs: Iterable[Row]) -> list[Row]:
    """Base first, then full, then LoRA by rank; ties by train task and seed."""
    return sorted(runs, key=_run_sort_key)


def done_runs(runs: Iterable[Row]) -> list[Row]:
    return sort_runs(r for r in runs if r["status"] == "done")


def failed_runs(runs: Iterable[Row]) -> list[Row]:
    """Runs that did not finish: status other than 'done' (and other than 'stopped': a run
    successive halving stopped at a rung did what it was asked)."""
    return sort_runs(r for r in runs if r["status"] not in ("done", STOPPED))


def stopped_runs(runs: Iterable[Row]) -> list[Row]:
    """Runs successive halving stopped at a rung (`search: halving`)."""
    return sort_runs(r for r in runs if r["status"] == STOPPED)


def is_baseline(run: Row) -> bool:
    return MethodKey.of(run).info.baseline


def base_run(runs: Iterable[Row]) -> Row | None:
    return next((r for r in done_runs(runs) if is_baseline(r)), None)


def primary_metrics(metrics: Iterable[Row]) -> dict[str, str]:
    """Task -> its primary metric: 'acc' when the task has it, else 'em_strict'."""
    names: dict[str, set[str]] = defaultdict(set)
    for m in metrics:
        names[m["task"]].add(m["metric"])
    return {t: "acc" if "acc" in ms else "em_strict" for t, ms in names.items()}


# ------------------------------------------------------------------ scores
@dataclass(frozen=True)
class Score(Keyed):
    """One run's primary metric on one eval task, and the base model's on the same task."""

    run_id: str
    train_task: str | None
    key: MethodKey
    seed: int | None
    task: str
    metric: str
    value: float
    stderr: float | None
    n: int | None
    base_value: float | None = None

    @property
    def delta(self) -> float | None:
        return None if self.base_value is None else self.value - self.base_value


def scores(runs: Iterable[Row], metrics: Iterable[Row], metric: str | None = None) -> list[Score]:
    """Primary-metric score per (done run, eval task), with the base value beside it; with
    `metric`, that metric's instead (where a task has it)."""
    runs = list(runs)
    metrics = list(metrics)
    primary = primary_metrics(metrics)
    if metric is not None:
        primary = dict.fromkeys(primary, metric)
    by_run = {r["run_id"]: r for r in done_runs(runs)}
    base = base_run(runs)
    base_vals = {
        m["task"]: m["value"]
        for m in metrics
        if base and m["run_id"] == base["run_id"] and m["metric"] == primary[m["task"]]
    }
    out = []
    for m in metrics:
        run = by_run.get(m["run_id"])
        if run is None or m["metric"] != primary[m["task"]] or m["value"] is None:
            continue
        out.append(
            Score(
                run_id=run["run_id"],
                train_task=run.get("train_task"),
                key=MethodKey.of(run),
                seed=run.get("seed"),
                task=m["task"],
                metric=m["metric"],
                value=float(m["value"]),
                stderr=m.get("stderr"),
                n=m.get("n"),
                base_value=base_vals.get(m["task"]),
            )
        )
    order = {r["run_id"]: i for i, r in enumerate(by_run.values())}
    return sorted(out, key=lambda s: (order[s.run_id], s.task))


@dataclass(frozen=True)
class AggScore(Keyed):
    """One configuration (train task, method key) on one task across its seeds: the mean with
    its seed-level 95% t-interval (`ci`), and the same for the change vs base (`delta_ci`).
    `std` / `delta_std` are the sample standard deviations (None for one seed)."""

    train_task: str | None
    key: MethodKey
    task: str
    metric: str
    mean: float
    std: float | None
    delta_mean: float | None
    delta_std: float | None
    n_seeds: int
    run_ids: tuple[str, ...] = field(default=())
    ci: Interval | None = None
    delta_ci: Interval | None = None


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def aggregate(items: Iterable[Score]) -> list[AggScore]:
    """Group scores by (train task, method key, eval task) and average across seeds."""
    groups: dict[tuple, list[Score]] = defaultdict(list)
    for s in items:
        groups[(s.train_task, s.key, s.task)].append(s)
    out = []
    for (train_task, key, task), group in groups.items():
        mean, std = mean_std([s.value for s in group])
        deltas = [s.delta for s in group if s.delta is not None]
        d_mean, d_std = mean_std(deltas) if deltas else (None, None)
        out.append(
            AggScore(
                train_task=train_task,
                key=key,
                task=task,
                metric=group[0].metric,
                mean=mean,
                std=std,
                delta_mean=d_mean,
                delta_std=d_std,
                n_seeds=len(group),
                run_ids=tuple(s.run_id for s in group),
                ci=mean_ci([s.value for s in group]),
                delta_ci=mean_ci(deltas) if deltas else None,
            )
        )
    return sorted(out, key=lambda a: (a.key.sort_key, a.train_task or "", a.task))


# ------------------------------------------------------------------ the sweep's data
@dataclass
class ReportData:
    """Everything the report reads from the store, plus the derived score tables.

    `metrics` may hold rows of both splits; after construction it holds the *test* rows only
    (every table, figure and sentence reads it) and `val_metrics` the validation rows, which
    only the learning-rate selection and the recommendation read.
    """

    meta: dict[str, str]
    runs: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    train_log: list[dict[str, Any]] = field(default_factory=list)
    analysis: list[dict[str, Any]] = field(default_factory=list)
    chance: dict[str, float] = field(default_factory=dict)
    """Per MCQ task, the score of a uniform random guess (fraction)."""
    fits: list[dict[str, Any]] = field(default_factory=list)
    """The store's `fits` rows: mean ‖ΔW‖_F vs rank, per train task and module type."""

    predictions: dict[tuple[str, str, str], dict[str, float]] = field(default_factory=dict)
    """Per (run_id, task, split): item_id -> score (0/1 correct), for the paired tests."""
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """Results computed once per report (the summary's paired comparisons)."""

    def __post_init__(self) -> None:
        everything = self.metrics
        self.metrics = on_split(everything, TEST)
        self.val_metrics = on_split(everything, VAL)
        self.rung_metrics = [m for m in everything if split_of(m).startswith(RUNG_PREFIX)]
        """Validation scores at the rungs of successive halving (split `val@<step>`)."""
        self.scores = scores(self.runs, self.metrics)
        self.agg = aggregate(self.scores)
        self.val_scores = scores(self.runs, self.val_metrics)
        self.val_agg = aggregate(self.val_scores)

    def correct(self, run_id: str, task: str, split: str = TEST) -> dict[str, float]:
        """item_id -> score of one run on one task and split (empty when not loaded)."""
        return self.predictions.get((run_id, task, split), {})

    @property
    def sweep_name(self) -> str:
        return self.meta.get("sweep_name") or "sweep"

    def _config_tasks(self) -> dict[str, Any]:
        """The ``tasks`` section of the stored config (a fallback for missing meta keys)."""
        try:
            tasks = json.loads(self.meta.get("config_json") or "{}").get("tasks")
        except (ValueError, AttributeError):
            return {}
        return tasks if isinstance(tasks, dict) else {}

    def _meta_list(self, key: str, section: str, fallback: Iterable[str]) -> list[str]:
        raw = self.meta.get(key)
        if raw:
            return list(json.loads(raw))
        return list(self._config_tasks().get(section) or []) or sorted(set(fallback))

    @property
    def eval_tasks(self) -> list[str]:
        return self._meta_list("eval_tasks", "eval", (m["task"] for m in self.metrics))

    @property
    def train_tasks(self) -> list[str]:
        trained = (r["train_task"] for r in self.runs if r.get("train_task"))
        return self._meta_list("train_tasks", "train", trained)

    @property
    def retention_task(self) -> str | None:
        return self.meta.get("retention_task") or self._config_tasks().get("retention") or None

    @property
    def retention_groups(self) -> list[str]:
        """The groups (MMLU subjects) the retention task was scored on, from its per-group
        metrics (`<metric>|<group>`): every subject no training task of the sweep covers."""
        ret = self.retention_task
        return sorted(
            {
                m["metric"].split("|", 1)[1]
                for m in self.metrics
                if m["task"] == ret and "|" in m["metric"]
            }
        )

    def task_header(self, task: str) -> str:
        return f"{task} (retention)" if task == self.retention_task else task
