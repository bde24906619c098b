"""The probe's tables, and `--validate DIR`: its predictions against a finished sweep.

The truth per train task is the sweep report's recommendation (`report.significance.
recommendations`, made on validation items): the best configuration's rank ('full' for full
SFT, 'base' where the untouched model scored best), and every configuration statistically
indistinguishable from it. A prediction is a *hit* when it is the best or one of those. Its
*rank error* is log2(predicted) - log2(best) (one step of a log-spaced grid [8, 32, 128] is
2), with 'full' counted as the full rank min(d_in, d_out) of the largest target module; none
where the best is the base model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankscope.errors import RankscopeError
from rankscope.probe_core import FULL, PREDICTORS, Prediction, ProbeRow
from rankscope.rundir import STORE_NAME


@dataclass(frozen=True)
class Truth:
    task: str
    best: str
    """A rank ('32'), 'full' or 'base'."""
    tied: frozenset[str]
    """The best and every choice statistically indistinguishable from it."""


def _choice(key: Any) -> str:
    if key.info.ranked:
        return str(key.rank)
    return "base" if key.info.baseline else FULL


def load_truth(sweep_dir: Path) -> dict[str, Truth]:
    """Per train task of a finished sweep, its recommendation as a Truth."""
    from rankscope.report import load_report_data
    from rankscope.report.significance import recommendations

    store = Path(sweep_dir) / STORE_NAME
    if not store.is_file():
        raise RankscopeError(f"--validate: {sweep_dir} has no {STORE_NAME}; give a finished sweep")
    out = {}
    for rec in recommendations(load_report_data(store)):
        best = _choice(rec.best.key)
        tied = {best} | {_choice(c.key) for c in rec.others if c.indistinguishable}
        out[rec.train_task] = Truth(rec.train_task, best, frozenset(tied))
    if not out:
        raise RankscopeError(
            f"--validate: {sweep_dir} has no recommendation (no validation scores)"
        )
    return out


def check_tasks(truth: dict[str, Truth], tasks: list[str], sweep_dir: Path) -> None:
    missing = [t for t in tasks if t not in truth]
    if missing:
        raise RankscopeError(
            f"--validate: {sweep_dir} recommends nothing for {', '.join(missing)} (it has "
            f"{', '.join(truth)}); probe the same train tasks"
        )


def log2_error(choice: str | None, best: str, full_rank: int) -> float | None:
    if choice is None or best == "base":
        return None
    value = {FULL: full_rank}

    def rank(c: str) -> int:
        return value.get(c) or int(c)

    return math.log2(rank(choice)) - math.log2(rank(best))


def scores(
    rows: list[ProbeRow], truth: dict[str, Truth], full_rank: int
) -> dict[str, dict[str, Any]]:
    """Per predictor: hits, predictions, mean |log2 error|, mean seconds and tokens."""
    out = {}
    names = [n for n in PREDICTORS if any(n in r.predictions for r in rows)]
    for name in names:
        preds = [(r, r.predictions[name]) for r in rows if name in r.predictions]
        hits = sum(p.choice in truth[r.task].tied for r, p in preds)
        errs = [
            e
            for r, p in preds
            if (e := log2_error(p.choice, truth[r.task].best, full_rank)) is not None
        ]
        out[name] = {
            "hits": hits,
            "n": len(preds),
            "mean_abs_log2_error": sum(map(abs, errs)) / len(errs) if errs else None,
            "seconds": sum(p.seconds for _, p in preds) / len(preds),
            "tokens": sum(p.tokens for _, p in preds) / len(preds),
        }
    return out


def _cell(p: Prediction | None, truth: Truth | None) -> str:
    if p is None:
        return "-"
    if p.choice is None:
        return f"n/a ({p.note})"
    mark = "" if truth is None else (" ✓" if p.choice in truth.tied else " ✗")
    cost = f"{p.seconds:.0f} s, {p.tokens / 1000:.1f}k tok"
    return f"{p.choice}{mark} (median {p.median_rank:g}; {cost})"


def table(rows: list[ProbeRow], truth: dict[str, Truth] | None, title: str) -> Any:
    """The rich table: per (task, seed) every predictor's choice, median rank and cost, and
    with a sweep its recommendation and hits."""
    from rich.table import Table

    names = [n for n in PREDICTORS if any(n in r.predictions for r in rows)]
    t = Table(title=title)
    for col in ["train task", "seed", *names]:
        t.add_column(col, no_wrap=col in ("train task", "seed"))
    if truth is not None:
        t.add_column("sweep best")
        t.add_column("indistinguishable")
    for r in rows:
        tr = truth.get(r.task) if truth else None
        cells = [r.task, str(r.seed), *(_cell(r.predictions.get(n), tr) for n in names)]
        if truth is not None:
            cells += [tr.best, ", ".join(sorted(tr.tied - {tr.best}, key=_order)) or "-"]
        t.add_row(*cells)
    return t


def _order(choice: str) -> tuple[int, int]:
    return (1, 0) if not choice.isdigit() else (0, int(choice))


def summary(result: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for name, s in result.items():
        err = s["mean_abs_log2_error"]
        err_text = "n/a" if err is None else f"{err:.2f}"
        lines.append(
            f"{name}: {s['hits']}/{s['n']} hits, mean |log2 rank error| {err_text}, "
            f"{s['seconds']:.0f} s and {s['tokens'] / 1000:.1f}k tokens per (task, seed)"
        )
    return lines


def as_dict(truth: dict[str, Truth]) -> dict[str, dict[str, Any]]:
    return {
        t: {"best": v.best, "indistinguishable": sorted(v.tied, key=_order)}
        for t, v in truth.items()
    }
