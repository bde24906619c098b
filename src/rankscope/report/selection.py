"""Which learning rate each configuration is reported at, chosen on the validation split only.

A sweep may train one configuration at several learning rates. Picking, per configuration,
the lr that scores best *on test* and then reporting that test score is a selection leak:
the reported number is the maximum of several noisy test numbers, biased upwards, and more
so for configurations that were given more lrs. So the choice is made on validation items
(carved from the training data, disjoint from test) and the test tables show each
configuration at that lr only.

A *group* is (train task, :class:`MethodKey` without lr): method, rank, variant, alpha.
Its selected lr is the one whose mean over seeds of the primary validation metric on the
group's own train task is highest; ties go to the smaller lr. Lrs without validation rows
cannot win. A group with no validation rows at all keeps its lr when it has just one and
has no selected lr (None) otherwise: selection was impossible, and the report says so and
shows every lr of that group (labelled with its lr). The base model has no lr and no group.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from rankscope.report.data import AggScore, ReportData, Score, done_runs
from rankscope.report.keys import MethodKey, Row
from rankscope.stats import Interval

Group = tuple[str | None, MethodKey]
"""(train task, method key with lr=None)."""


class _HasKey(Protocol):
    @property
    def train_task(self) -> str | None: ...

    @property
    def key(self) -> MethodKey: ...


T = TypeVar("T", bound=_HasKey)


def group_key(key: MethodKey) -> MethodKey:
    """The key with its lr dropped: what a group of lrs shares."""
    return replace(key, lr=None)


def group_of(item: _HasKey) -> Group:
    return (item.train_task, group_key(item.key))


def _lr_order(lr: float | None) -> float:
    return -1.0 if lr is None else float(lr)


def group_lrs(data: ReportData) -> dict[Group, list[float | None]]:
    """Every tuned group of the sweep's done runs and its lrs, ascending."""
    lrs: dict[Group, set[float | None]] = defaultdict(set)
    for run in done_runs(data.runs):
        key = MethodKey.of(run)
        if not key.info.baseline:
            lrs[(run.get("train_task"), group_key(key))].add(key.lr)
    return {g: sorted(v, key=_lr_order) for g, v in lrs.items()}


def val_in_domain(data: ReportData) -> list[AggScore]:
    """The validation aggregates of tuned configurations on their own train task."""
    return [
        a
        for a in data.val_agg
        if not a.key.info.baseline and a.train_task is not None and a.task == a.train_task
    ]


def selected_lrs(data: ReportData) -> dict[Group, float | None]:
    """Group -> the lr with the best mean validation score on the group's train task (ties:
    the smaller lr); the only lr without validation rows; None when there are several lrs and
    no validation rows. Test scores are never read."""
    val: dict[Group, dict[float | None, float]] = defaultdict(dict)
    for a in val_in_domain(data):
        val[group_of(a)][a.key.lr] = a.mean
    out: dict[Group, float | None] = {}
    for group, lrs in group_lrs(data).items():
        means = {lr: m for lr, m in val[group].items() if lr in lrs}
        if means:
            out[group] = min(means, key=lambda lr: (-means[lr], _lr_order(lr)))
        else:
            out[group] = lrs[0] if len(lrs) == 1 else None
    return out


def is_selected(item: _HasKey | Row, selected: dict[Group, float | None]) -> bool:
    """Whether a score / aggregate / ``runs`` row is shown: the base model always; a tuned
    configuration when its lr is its group's selected lr, or when selection was impossible
    (or its group is unknown), since then every lr is shown."""
    if isinstance(item, Mapping):
        key, train_task = MethodKey.of(item), item.get("train_task")
    else:
        key, train_task = item.key, item.train_task
    if key.info.baseline:
        return True
    lr = selected.get((train_task, group_key(key)))
    return lr is None or key.lr == lr


def impossible(data: ReportData, selected: dict[Group, float | None] | None = None) -> list[Group]:
    """The groups whose lr could not be selected (several lrs, no validation rows)."""
    selected = selected_lrs(data) if selected is None else selected
    return [g for g, lrs in group_lrs(data).items() if len(lrs) > 1 and selected.get(g) is None]


def select(items: Iterable[T], selected: dict[Group, float | None]) -> list[T]:
    """The items at their group's selected lr (see `is_selected`)."""
    return [i for i in items if is_selected(i, selected)]


def shown(items: Iterable[T], selected: dict[Group, float | None]) -> list[T]:
    """The items at their group's selected lr, re-keyed to the group key (lr=None) so a
    group is one row even where train tasks selected different lrs. Items of groups whose
    selection was impossible keep their lr in the key (one row per lr; label them with
    `MethodKey.lr_label`). Works on `Score` and `AggScore` (any dataclass with `key`)."""
    out = []
    for item in select(items, selected):
        if not item.key.info.baseline and selected.get(group_of(item)) is not None:
            item = replace(item, key=group_key(item.key))  # type: ignore[type-var]
        out.append(item)
    return out


def shown_agg(
    data: ReportData, selected: dict[Group, float | None] | None = None
) -> list[AggScore]:
    """The test aggregates the tables show (see `shown`)."""
    return shown(data.agg, selected_lrs(data) if selected is None else selected)


def shown_scores(
    data: ReportData, selected: dict[Group, float | None] | None = None
) -> list[Score]:
    """The per-run test scores the tables show (see `shown`)."""
    return shown(data.scores, selected_lrs(data) if selected is None else selected)


def shown_runs(data: ReportData, selected: dict[Group, float | None] | None = None) -> list[Row]:
    """The done runs at their group's selected lr (all lrs where selection was impossible)."""
    selected = selected_lrs(data) if selected is None else selected
    return [r for r in done_runs(data.runs) if is_selected(r, selected)]


def several_lrs(data: ReportData) -> bool:
    """Whether some group was trained at more than one lr (the lr table is then shown)."""
    return any(len(v) > 1 for v in group_lrs(data).values())


@dataclass(frozen=True)
class LrRow:
    """One (group, lr) of the learning-rate selection table."""

    train_task: str | None
    key: MethodKey
    """The key with its lr."""
    val: Interval | None
    """Mean validation score over seeds on the train task (None: no validation rows)."""
    test_in_domain: Interval | None
    """Mean test score on the train task, shown for information only; never used to select."""
    selected: bool


def _by(aggs: Sequence[AggScore]) -> dict[tuple[str | None, MethodKey], Interval | None]:
    return {(a.train_task, a.key): a.ci for a in aggs if a.task == a.train_task}


def lr_rows(data: ReportData, selected: dict[Group, float | None] | None = None) -> list[LrRow]:
    """Every (group, lr) with its validation and in-domain test score, ordered by group and lr."""
    selected = selected_lrs(data) if selected is None else selected
    val, test = _by(val_in_domain(data)), _by(data.agg)
    rows = []
    for (train_task, gkey), lrs in group_lrs(data).items():
        for lr in lrs:
            key = replace(gkey, lr=lr)
            chosen = selected.get((train_task, gkey))
            rows.append(
                LrRow(
                    train_task,
                    key,
                    val.get((train_task, key)),
                    test.get((train_task, key)),
                    chosen is not None and chosen == lr,
                )
            )
    return sorted(rows, key=lambda r: (r.train_task or "", *_order(r.key)))


def _order(key: MethodKey) -> tuple:
    return (key.sort_key, _lr_order(key.alpha), _lr_order(key.lr))


__all__ = [
    "Group",
    "LrRow",
    "group_key",
    "group_lrs",
    "group_of",
    "impossible",
    "is_selected",
    "lr_rows",
    "select",
    "selected_lrs",
    "several_lrs",
    "shown",
    "shown_agg",
    "shown_runs",
    "shown_scores",
    "val_in_domain",
]
