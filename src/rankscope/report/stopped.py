"""The configurations successive halving (`search: halving`) stopped at a rung: their own
short section, since every other table, the selection and the recommendation read finished
runs only (`rankscope.halving`)."""

from __future__ import annotations

from rankscope.report.blocks import Block, Heading, collapsed
from rankscope.report.data import ReportData, stopped_runs
from rankscope.report.fmt import Table, fmt_pct
from rankscope.report.keys import MethodKey
from rankscope.rungs import RUNG_PREFIX, primary_value


def _rung_val(data: ReportData, run: dict) -> float | None:
    """The run's primary validation score on its train task at the last rung it reached."""
    rows = [
        m
        for m in data.rung_metrics
        if m["run_id"] == run["run_id"] and m["task"] == run.get("train_task")
    ]
    if not rows:
        return None
    last = max(int(m["split"][len(RUNG_PREFIX) :]) for m in rows)
    at = {
        m["metric"]: (m["value"], m.get("stderr"), m.get("n"))
        for m in rows
        if int(m["split"][len(RUNG_PREFIX) :]) == last
    }
    return primary_value(at)


def stopped_blocks(data: ReportData) -> list[Block]:
    """The configurations successive halving stopped early: their budget and last rung's
    validation score (they are in no other table: only finished runs are)."""
    runs = stopped_runs(data.runs)
    if not runs:
        return []
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r.get("train_task"), MethodKey.of(r)), []).append(r)
    caption = (
        "Configurations successive halving (`search: halving`) stopped at a rung: the share "
        "of the training budget they reached and their mean validation score there. They "
        "are left out of every other table, the selection and the recommendation."
    )
    t = Table.make(
        ["train task", "configuration", "seeds", "budget reached", "val % at rung"], 2, caption
    )
    for (task, key), rows in sorted(
        groups.items(), key=lambda kv: (kv[0][0] or "", kv[0][1].sort_key, kv[0][1].lr or 0)
    ):
        fractions = sorted({r.get("budget_fraction") for r in rows if r.get("budget_fraction")})
        vals = [v for r in rows if (v := _rung_val(data, r)) is not None]
        t.rows.append(
            [
                task or "–",
                key.lr_label,
                str(len(rows)),
                " / ".join(f"{f:.3g}" for f in fractions) or "–",
                fmt_pct(sum(vals) / len(vals)) if len(vals) == len(rows) else "–",
            ]
        )
    return [Heading("Stopped early"), collapsed("Stopped by successive halving", t)]
