"""The replay view: does mixing general data into training (`train.replay_fraction`) keep
what fine-tuning makes a model forget, and does it beat the cheap alternative the paper
suggests, a lower rank without replay?

Shown only when the sweep trained at more than one replay fraction. Per train task and
configuration (full SFT, each LoRA rank; each at its lr selected on validation) and replay
fraction: the change vs base in-domain, cross-domain (the mean over the eval tasks that are
neither the train task nor the retention task) and on the retention task, each a mean over
seeds with its 95% t-interval (`rankscope.stats.mean_ci`). Then the paired tests on the same
eval items (`report.significance.paired`: seeds and items resampled), Holm-corrected together
over this view's family: each configuration with replay against itself without replay, and
against every lower LoRA rank without replay (full SFT: every LoRA rank), on retention and
cross-domain. A figure draws the three changes against the replay fraction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from matplotlib.figure import Figure

from rankscope.report.blocks import Block, FigureBlock, Heading, Para, TableBlock
from rankscope.report.data import TEST, ReportData
from rankscope.report.fmt import Table, fmt_ci_pp, fmt_comparison
from rankscope.report.keys import MethodKey
from rankscope.report.plot import (
    FigureOut,
    Point,
    draw_series,
    method_colors,
    new_figure,
    seeds_note,
    series,
    shared_legend,
)
from rankscope.report.significance import paired, units
from rankscope.stats import Comparison, Interval, holm_adjust, mean_ci

FIGURE = "replay"
IN, CROSS, RETENTION = "in-domain", "cross-domain", "retention"
KINDS = (IN, CROSS, RETENTION)
TESTED = (RETENTION, CROSS)
"""The axes the paired tests compare on: what replay is meant to protect."""


@dataclass(frozen=True)
class ReplayRow:
    """One configuration at one replay fraction on one train task: its changes vs base,
    mean over seeds with the 95% interval (None where no run has the score)."""

    train_task: str
    key: MethodKey
    """At its selected lr (lr None) and with its replay fraction."""
    run_ids: tuple[str, ...]
    change: dict[str, Interval | None]
    """Kind (in-domain, cross-domain, retention) -> change vs base."""


@dataclass(frozen=True)
class ReplayTest:
    """A configuration with replay minus a reference without it, on one kind of items."""

    train_task: str
    key: MethodKey
    reference: MethodKey
    kind: str
    comparison: Comparison


def fractions(data: ReportData) -> list[float]:
    """The replay fractions of the sweep's done tuned runs, ascending."""
    keys = (MethodKey.of(r) for r in data.runs if r["status"] == "done")
    return sorted({k.replay for k in keys if not k.info.baseline})


def shown(data: ReportData) -> bool:
    """Whether the sweep has the replay view: more than one replay fraction."""
    return len(fractions(data)) > 1


def _kind_tasks(data: ReportData, train_task: str) -> dict[str, tuple[str, ...]]:
    ret = data.retention_task
    cross = tuple(t for t in data.eval_tasks if t not in (train_task, ret))
    kinds = {IN: (train_task,), CROSS: cross, RETENTION: (ret,) if ret else ()}
    return {k: v for k, v in kinds.items() if v}


def _change(data: ReportData, run_ids: tuple[str, ...], tasks: tuple[str, ...]) -> Interval | None:
    """Per run the mean change vs base over `tasks`, then its mean over runs (seeds)."""
    by_run: dict[str, list[float]] = defaultdict(list)
    for s in data.scores:
        if s.run_id in run_ids and s.task in tasks and s.delta is not None:
            by_run[s.run_id].append(s.delta)
    per_run = [sum(v) / len(v) for v in by_run.values() if len(v) == len(tasks)]
    return mean_ci(per_run) if per_run else None


def replay_rows(data: ReportData) -> list[ReplayRow]:
    """Every tuned configuration at every replay fraction, in train task and key order."""
    rows = []
    for (task, key), runs in units(data).items():
        kinds = _kind_tasks(data, task)
        ids = tuple(runs)
        change = {k: _change(data, ids, kinds[k]) if k in kinds else None for k in KINDS}
        rows.append(ReplayRow(task, key, ids, change))
    order = {t: i for i, t in enumerate(data.train_tasks)}
    return sorted(rows, key=lambda r: (order.get(r.train_task, len(order)), r.key.sort_key))


def _references(row: ReplayRow, rows: list[ReplayRow]) -> Iterator[ReplayRow]:
    """The same configuration without replay, then every lower LoRA rank without replay
    (for full SFT: every LoRA rank), on the same train task."""
    mine = [r for r in rows if r.train_task == row.train_task and not r.key.replay]
    yield from (r for r in mine if r.key == replace(row.key, replay=0.0))
    for r in mine:
        lower = row.key.rank is None or (r.key.rank or 0) < row.key.rank
        same_kind = r.key.variant == row.key.variant or not row.key.info.ranked
        if r.key.info.ranked and r.key != row.key and lower and same_kind:
            yield r


def replay_tests(data: ReportData) -> list[ReplayTest]:
    """The view's paired tests, Holm-corrected together (cached on `data`)."""
    if "replay_tests" in data.cache:
        return data.cache["replay_tests"]
    rows = replay_rows(data)
    raw = []
    for row in (r for r in rows if r.key.replay):
        kinds = _kind_tasks(data, row.train_task)
        for ref in _references(row, rows):
            for kind in (k for k in TESTED if k in kinds):
                c = paired(data, row.run_ids, ref.run_ids, kinds[kind], TEST)
                if c is not None:
                    raw.append(ReplayTest(row.train_task, row.key, ref.key, kind, c))
    adjusted = holm_adjust([t.comparison for t in raw])
    tests = [replace(t, comparison=c) for t, c in zip(raw, adjusted, strict=True)]
    data.cache["replay_tests"] = tests
    return tests


def _label(key: MethodKey) -> str:
    return replace(key, replay=0.0).label


def _replay(key: MethodKey) -> str:
    return f"{100 * key.replay:g}%"


def replay_table(data: ReportData) -> Table | None:
    """One row per (train task, configuration, replay fraction): the changes vs base, and
    the paired difference from the same configuration without replay."""
    rows = replay_rows(data)
    if not rows:
        return None
    tests = {(t.train_task, t.key, t.reference, t.kind): t.comparison for t in replay_tests(data)}
    cols = ["train task", "configuration", "replay", "seeds"]
    cols += [f"{k} Δ vs base (pp)" for k in KINDS]
    cols += [f"{k}: replay − no replay" for k in TESTED]
    caption = (
        "Change vs base per replay fraction: mean over seeds ± 95% CI half-width (pp); the "
        "last columns are paired differences on the same items (pp, 95% CI, Holm-corrected "
        "p over this section's comparisons); significant ones bold."
    )
    t = Table.make(cols, 3, caption)
    for r in rows:
        cells = [r.train_task, _label(r.key), _replay(r.key), str(len(r.run_ids))]
        cells += [fmt_ci_pp(r.change[k]) for k in KINDS]
        none = replace(r.key, replay=0.0)
        for j, kind in enumerate(TESTED):
            c = tests.get((r.train_task, r.key, none, kind))
            cells.append("–" if c is None else fmt_comparison(c))
            if c is not None and c.significant:
                t.bold.add((len(t.rows), len(cols) - len(TESTED) + j))
        t.rows.append(cells)
    return t


def alternative_table(data: ReportData) -> Table | None:
    """Each configuration with replay against every lower LoRA rank without replay (the
    cheap alternative), on retention and cross-domain: paired differences."""
    tests = [t for t in replay_tests(data) if replace(t.key, replay=0.0) != t.reference]
    if not tests:
        return None
    caption = (
        "Replay vs a lower rank without replay: paired differences on the same items (pp, "
        "95% CI, Holm-corrected p over this section's comparisons); positive = replay "
        "keeps more; significant ones bold."
    )
    cols = ["train task", "with replay", "vs (no replay)", *(f"{k} difference" for k in TESTED)]
    t = Table.make(cols, 3, caption)
    cells: dict[tuple, dict[str, Comparison]] = defaultdict(dict)
    for x in tests:
        cells[(x.train_task, x.key, x.reference)][x.kind] = x.comparison
    for (task, key, ref), by_kind in cells.items():
        row = [task, f"{_label(key)} replay {_replay(key)}", ref.label]
        for j, kind in enumerate(TESTED):
            c = by_kind.get(kind)
            row.append("–" if c is None else fmt_comparison(c))
            if c is not None and c.significant:
                t.bold.add((len(t.rows), 3 + j))
        t.rows.append(row)
    return t


def fig_replay(data: ReportData) -> Figure | None:
    """Change vs base against the replay fraction, one row of panels per train task (in-
    domain, cross-domain, retention) and one line per configuration at its selected lr; a
    lower rank without replay is its line's point at 0. Mean over seeds, 95% CI error bars."""
    rows = replay_rows(data) if shown(data) else []
    if not rows:
        return None
    lines: dict[tuple[str, str, MethodKey], list[Point]] = defaultdict(list)
    for r in rows:
        for kind, ci in r.change.items():
            if ci is not None:
                base_key = replace(r.key, replay=0.0)
                lines[(r.train_task, kind, base_key)].append(Point.of(100 * r.key.replay, ci))
    panels = [
        (t, k) for t in data.train_tasks for k in KINDS if any(p[:2] == (t, k) for p in lines)
    ]
    fig, axes = new_figure(len(panels), ncols=3)
    colors = method_colors(k for _, _, k in lines)
    for ax, (task, kind) in zip(axes, panels, strict=True):
        for (t, k, key), pts in sorted(lines.items(), key=lambda kv: kv[0][2].sort_key):
            if (t, k) == (task, kind):
                ls = "--" if key.info.reference else "-"
                draw_series(
                    ax, series(key.label, pts, key=key), color=colors[key], marker="o", ls=ls
                )
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(sorted({100 * f for f in fractions(data)}))
        ax.set_xlabel("replay fraction (% general items)")
        ax.set_ylabel(f"Δ {kind} vs base (pp)")
        ax.set_title(f"trained on {task}: {kind}")
        ax.grid(True, alpha=0.3)
    shared_legend(fig, axes)
    ns = [len(r.run_ids) for r in rows]
    fig.suptitle(f"Replay: change vs base against the replay fraction ({seeds_note(ns)})")
    return fig


REPLAY_FIGURES = [(FIGURE, "Replay vs lower rank", fig_replay)]

INTRO = (
    "Each configuration trained with a share f of general-domain items mixed into its "
    "training set (f of the mixed set: n·f/(1−f) items added to n task items; the "
    "retention task's general set with every test and validation question removed), "
    "beside the same configuration without replay and beside the cheap alternative, a lower "
    "LoRA rank without replay. Each configuration is at its lr selected on validation."
)


def replay_blocks(data: ReportData, figs: Sequence[FigureOut] = ()) -> list[Block]:
    """The replay section: nothing unless the sweep has more than one replay fraction; shows
    its figure (`replay.png`) when `figs`, the saved result figures, hold it."""
    if not shown(data):
        return []
    blocks: list[Block] = [Heading("Replay: negative-transfer mitigation"), Para(INTRO)]
    for title, table in (
        ("Change vs base per replay fraction", replay_table(data)),
        ("Replay vs a lower rank without replay", alternative_table(data)),
    ):
        if table is not None and table.rows:
            blocks += [Heading(title, 3), TableBlock(table)]
    blocks += [FigureBlock(f) for f in figs if f.name == FIGURE]
    return blocks
