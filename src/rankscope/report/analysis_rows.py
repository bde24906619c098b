"""Reading the store's analysis rows per run and per configuration, for the analysis
figures and the spectral summary table.

Runs are identified by ``run_id`` only to join rows; configurations are grouped by the
typed columns (train task, :class:`MethodKey`), never by a label.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable

import numpy as np
from matplotlib.axes import Axes

from rankscope.report.data import ReportData, is_baseline, sort_runs
from rankscope.report.keys import MethodKey, Row
from rankscope.report.plot import color_map, rank_axis

ConfigKey = tuple[str | None, MethodKey]
"""(train task, method key): what the seeds of a configuration are averaged over."""


def module_type(module: str) -> str:
    """'model.layers.3.self_attn.q_proj' -> 'q_proj'."""
    return module.rsplit(".", 1)[-1]


def rows_of(data: ReportData, kind: str, metric: str | Callable[[str], bool]) -> list[Row]:
    match = metric if callable(metric) else (lambda m: m == metric)
    return [
        r
        for r in data.analysis
        if r["kind"] == kind
        and match(r["metric"])
        and r["value"] is not None
        and math.isfinite(r["value"])
    ]


def per_run(
    rows: Iterable[Row], reduce: str = "mean", mtype: str | None = None
) -> dict[str, float]:
    """Mean (or sum) of the rows' values per run, optionally of one module type only."""
    vals: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if mtype is None or module_type(r["module"]) == mtype:
            vals[r["run_id"]].append(r["value"])
    agg = np.sum if reduce == "sum" else np.mean
    return {k: float(agg(v)) for k, v in vals.items()}


def tuned_runs(data: ReportData, run_ids: Iterable[str]) -> list[Row]:
    ids = set(run_ids)
    return sort_runs(r for r in data.runs if r["run_id"] in ids and not is_baseline(r))


def run_name(run: Row, multi_seed: bool) -> str:
    name = f"{run.get('train_task') or 'base'} · {MethodKey.of(run).label}"
    return name + (f" · s{run.get('seed')}" if multi_seed else "")


def multi_seed(data: ReportData) -> bool:
    return len({r.get("seed") for r in data.runs if not is_baseline(r)}) > 1


def by_config(data: ReportData, values: dict[str, float]) -> dict[ConfigKey, float]:
    """Average per-run values across seeds, per (train task, method key)."""
    groups: dict[ConfigKey, list[float]] = defaultdict(list)
    for r in tuned_runs(data, values):
        groups[(r["train_task"], MethodKey.of(r))].append(values[r["run_id"]])
    return {k: float(np.mean(v)) for k, v in groups.items()}


def rank_panel(ax: Axes, data: ReportData, values: dict[str, float], ylabel: str) -> None:
    """Value vs rank, one line per train task and variant, full SFT as a dashed line."""
    conf = by_config(data, values)
    colors = color_map(data.train_tasks)
    for train in data.train_tasks:
        ranked = {k: v for (t, k), v in conf.items() if t == train and k.info.ranked}
        for variant in sorted({k.variant for k in ranked}):
            pts = sorted((k.rank, v) for k, v in ranked.items() if k.variant == variant)
            ax.plot(
                [r for r, _ in pts],
                [v for _, v in pts],
                marker="o",
                color=colors[train],
                label=train + (f" ({variant})" if variant else ""),
            )
        for (t, k), v in conf.items():
            if t == train and k.info.reference:
                ax.axhline(v, color=colors[train], ls="--", lw=1.2, label=f"{train}: full SFT")
    rank_axis(ax, [k.rank for _, k in conf if k.info.ranked])
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="x-small")


def has_ranked(data: ReportData, values: dict[str, float]) -> bool:
    """Whether any run with values is of a ranked method (so a rank figure has lines)."""
    return any(MethodKey.of(r).info.ranked for r in tuned_runs(data, values))


ABLATED = {"top": "top heads", "random": "random heads"}
"""The head sets an ablation zeroes (`analyze.ablation_metric`), as the report names them."""

Ablation = tuple[float, float, float]
"""(change of accuracy when the heads are zeroed, its 95% CI low, high)."""


def ablation_deltas(data: ReportData) -> dict[str, dict[tuple[str, str, str], Ablation]]:
    """Per run: (task, model, head set) -> accuracy change with its CI, from the rows
    ``delta[_lo|_hi]:<model>:<heads>:<task>`` of kind ablation (module "heads")."""
    parts: dict[tuple[str, str, str, str], dict[str, float]] = defaultdict(dict)
    for r in rows_of(data, "ablation", lambda m: m.split(":", 1)[0].startswith("delta")):
        if r["module"] == "heads" and r["metric"].count(":") >= 3:
            stat, model, heads, task = r["metric"].split(":", 3)
            parts[(r["run_id"], task, model, heads)][stat] = r["value"]
    out: dict[str, dict[tuple[str, str, str], Ablation]] = defaultdict(dict)
    for (rid, task, model, heads), v in parts.items():
        if {"delta", "delta_lo", "delta_hi"} <= v.keys():
            out[rid][(task, model, heads)] = (v["delta"], v["delta_lo"], v["delta_hi"])
    return dict(out)
