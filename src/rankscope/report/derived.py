"""Tables derived from the aggregated scores: cross-domain matrices, trade-offs, sizes.

Each groups by :class:`MethodKey` (and the train task column) and orders by its
``sort_key``, so the report's rows follow the same order in every table and figure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rankscope.report.data import AggScore, done_runs
from rankscope.report.keys import Keyed, MethodKey, Row


def _tuned(a: AggScore) -> bool:
    return not a.key.info.baseline


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
        if _tuned(a) and a.train_task is not None:
            cells[a.key][(a.train_task, a.task)] = a.delta_mean
    out = []
    for key in sorted(cells, key=lambda k: k.sort_key):
        values = [[cells[key].get((t, e)) for e in eval_tasks] for t in train_tasks]
        out.append(CrossMatrix(key, list(train_tasks), list(eval_tasks), values))
    return out


def retention(agg: Iterable[AggScore], retention_task: str | None) -> list[AggScore]:
    """The aggregated scores of the tuned configurations on the retention task."""
    return [a for a in agg if a.task == retention_task and _tuned(a)]


@dataclass(frozen=True)
class Tradeoff(Keyed):
    """Per method key: mean in-domain, cross-domain and retention Δ over train tasks."""

    key: MethodKey
    in_domain: float | None
    cross_domain: float | None
    retention: float | None
    n_train_tasks: int


def _mean_or_none(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def tradeoffs(agg: Iterable[AggScore], retention_task: str | None) -> list[Tradeoff]:
    buckets: dict[MethodKey, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    tasks: dict[MethodKey, set[str]] = defaultdict(set)
    for a in agg:
        if not _tuned(a) or a.delta_mean is None:
            continue
        kind = (
            "retention" if a.task == retention_task else "in" if a.task == a.train_task else "cross"
        )
        buckets[a.key][kind].append(a.delta_mean)
        tasks[a.key].add(a.train_task or "")
    return [
        Tradeoff(
            key,
            _mean_or_none(b["in"]),
            _mean_or_none(b["cross"]),
            _mean_or_none(b["retention"]),
            len(tasks[key]),
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
