"""Tables derived from the aggregated scores: cross-domain matrices, trade-offs, sizes.

Each groups by :class:`MethodKey` (and the train task column) and orders by its
``sort_key``, so the report's rows follow the same order in every table and figure.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rankscope.report.data import AggScore, Score, done_runs
from rankscope.report.keys import Keyed, MethodKey, Row
from rankscope.stats import mean_ci


def _tuned(key: MethodKey) -> bool:
    return not key.info.baseline


@dataclass(frozen=True)
class CrossMatrix(Keyed):
    """Δ vs base (fraction) per (train task, eval task) for one method key."""

    key: MethodKey
    train_tasks: list[str]
    eval_tasks: list[str]
    values: list[list[float | None]]

    def cell(self, train_task: str, eval_task: str) -> float | None:
        return self.values[self.train_tasks.index(train_task)][self.eval_tasks.index(eval_task)]


def cross_domain(
    agg: Iterable[AggScore], train_tasks: Sequence[str], eval_tasks: Sequence[str]
) -> list[CrossMatrix]:
    """One train-task × eval-task matrix of mean Δ vs base per method key (not base)."""
    cells: dict[MethodKey, dict[tuple[str, str], float | None]] = defaultdict(dict)
    for a in agg:
        if _tuned(a.key) and a.train_task is not None:
            cells[a.key][(a.train_task, a.task)] = a.delta_mean
    out = []
    for key in sorted(cells, key=lambda k: k.sort_key):
        values = [[cells[key].get((t, e)) for e in eval_tasks] for t in train_tasks]
        out.append(CrossMatrix(key, list(train_tasks), list(eval_tasks), values))
    return out


def retention(agg: Iterable[AggScore], retention_task: str | None) -> list[AggScore]:
    """The aggregated scores of the tuned configurations on the retention task."""
    return [a for a in agg if a.task == retention_task and _tuned(a.key)]


@dataclass(frozen=True)
class Tradeoff(Keyed):
    """Per method key: mean in-domain, cross-domain and retention Δ over train tasks, with
    the 95% half-widths (`half_widths`, by kind; see `tradeoff_half_widths`) when known."""

    key: MethodKey
    in_domain: float | None
    cross_domain: float | None
    retention: float | None
    n_train_tasks: int
    half_widths: dict[str, float | None] = field(default_factory=dict)
    seeds: tuple[int, ...] = ()
    """The number of seeds behind each train task's numbers."""


def _mean_or_none(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _kind(task: str, train_task: str | None, retention_task: str | None) -> str:
    """In-domain first: a run trained on the retention task itself (MMLU trained on some
    subjects, retention measured on the others) is scored in-domain there, as the summary's
    claims do, never counted as retention."""
    return "in" if task == train_task else "retention" if task == retention_task else "cross"


def tradeoff_half_widths(
    items: Iterable[Score], retention_task: str | None
) -> tuple[dict[MethodKey, dict[str, float | None]], dict[MethodKey, tuple[int, ...]]]:
    """Per key and kind ('in', 'cross', 'retention'): the 95% half-width of the mean over
    train tasks of the Δ. Per train task, each run's Δ is averaged over the kind's eval
    tasks and the seed-level t-interval taken over runs; train tasks are independent runs,
    so their half-widths add in quadrature: sqrt(Σ hw²) / T (None when a train task has
    one seed). Also per key, the seed counts of its train tasks."""
    per_run: dict = defaultdict(lambda: defaultdict(list))
    for s in items:
        if _tuned(s.key) and s.delta is not None:
            kind = _kind(s.task, s.train_task, retention_task)
            per_run[(s.key, kind, s.train_task)][s.run_id].append(s.delta)
    hws: dict[MethodKey, dict[str, list[float | None]]] = defaultdict(lambda: defaultdict(list))
    seeds: dict[MethodKey, dict[str | None, int]] = defaultdict(dict)
    for (key, kind, train), runs in per_run.items():
        ci = mean_ci([sum(v) / len(v) for v in runs.values()])
        hws[key][kind].append(ci.half_width)
        seeds[key][train] = max(seeds[key].get(train, 0), len(runs))
    out = {key: {kind: _quadrature(h) for kind, h in kinds.items()} for key, kinds in hws.items()}
    return out, {k: tuple(v.values()) for k, v in seeds.items()}


def _quadrature(half_widths: list[float | None]) -> float | None:
    """The half-width of a mean of independent estimates: sqrt(Σ hw²) / n."""
    known = [h for h in half_widths if h is not None]
    if not known or len(known) < len(half_widths):
        return None
    return math.sqrt(sum(h * h for h in known)) / len(known)


def tradeoffs(
    agg: Iterable[AggScore], retention_task: str | None, items: Iterable[Score] | None = None
) -> list[Tradeoff]:
    """Mean Δ per kind over train tasks per key; with the per-run `items` (the same
    selection as `agg`) the half-widths and seed counts too."""
    buckets: dict[MethodKey, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    tasks: dict[MethodKey, set[str]] = defaultdict(set)
    for a in agg:
        if not _tuned(a.key) or a.delta_mean is None:
            continue
        buckets[a.key][_kind(a.task, a.train_task, retention_task)].append(a.delta_mean)
        tasks[a.key].add(a.train_task or "")
    hws, seeds = tradeoff_half_widths(items, retention_task) if items is not None else ({}, {})
    return [
        Tradeoff(
            key,
            _mean_or_none(b["in"]),
            _mean_or_none(b["cross"]),
            _mean_or_none(b["retention"]),
            len(tasks[key]),
            hws.get(key, {}),
            seeds.get(key, ()),
        )
        for key, b in sorted(buckets.items(), key=lambda kv: kv[0].sort_key)
    ]


@dataclass(frozen=True)
class ParamCount(Keyed):
    key: MethodKey
    trainable: int | None
    total: int | None

    @property
    def fraction(self) -> float | None:
        return self.trainable / self.total if self.trainable and self.total else None


def param_counts(runs: Iterable[Row]) -> list[ParamCount]:
    """Trainable / total parameters per method key (first done run that reports them)."""
    out: dict[MethodKey, ParamCount] = {}
    for r in done_runs(runs):
        key = MethodKey.of(r)
        if key not in out and r.get("trainable_params") is not None:
            out[key] = ParamCount(key, r["trainable_params"], r.get("total_params"))
    return [out[k] for k in sorted(out, key=lambda k: k.sort_key)]
