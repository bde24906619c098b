"""Figures of attention and representations: entropy change, per-head divergence, head
ablation and CKA with the base model, per layer.

Each figure exists only when the store holds the rows it needs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rankscope.report.analysis_rows import (
    ABLATED,
    Ablation,
    ablation_deltas,
    multi_seed,
    per_run,
    rows_of,
    run_name,
    tuned_runs,
)
from rankscope.report.data import ReportData, is_baseline
from rankscope.report.keys import MethodKey, Row
from rankscope.report.plot import method_colors, new_figure


def _layer_lines(
    data: ReportData, values: dict[str, dict[int, float]], ylabel: str, title: str
) -> Figure | None:
    """Value per layer, one panel per train task, one line per run."""
    runs = tuned_runs(data, values)
    tasks = [t for t in data.train_tasks if any(r["train_task"] == t for r in runs)]
    if not tasks:
        return None
    fig, axes = new_figure(len(tasks), w=4.6)
    keys = {r["run_id"]: MethodKey.of(r) for r in runs}
    colors = method_colors(keys.values())
    seeds = sorted({r.get("seed") for r in runs}, key=lambda s: (s is None, s))
    for ax, task in zip(axes, tasks, strict=True):
        for r in (r for r in runs if r["train_task"] == task):
            pts = sorted(values[r["run_id"]].items())
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker=".",
                color=colors[keys[r["run_id"]]],
                ls="-" if r.get("seed") == seeds[0] else "--",
                label=keys[r["run_id"]].label + (f", s{r['seed']}" if len(seeds) > 1 else ""),
            )
        ax.set_title(f"trained on {task}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.suptitle(title)
    return fig


def fig_entropy_change(data: ReportData) -> Figure | None:
    """Mean attention entropy over heads per layer, tuned minus base; below zero means
    sharper attention."""
    rows = rows_of(data, "attention", "entropy")
    base_ids = {r["run_id"] for r in data.runs if is_baseline(r)}
    base = {(r["layer"], r["head"]): r["value"] for r in rows if r["run_id"] in base_ids}
    diffs: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["run_id"] not in base_ids and (r["layer"], r["head"]) in base:
            diffs[r["run_id"]][r["layer"]].append(r["value"] - base[(r["layer"], r["head"])])
    values = {rid: {la: float(np.mean(v)) for la, v in d.items()} for rid, d in diffs.items()}
    fig = _layer_lines(
        data,
        values,
        "Δ attention entropy (nats, mean over heads)",
        "Attention entropy change vs base per layer (tuned − base)",
    )
    if fig is not None:
        for ax in fig.axes:
            ax.axhline(0, color="black", lw=0.8)
    return fig


def _head_matrix(rows: Iterable[Row]) -> np.ndarray:
    rows = list(rows)
    m = np.full((max(r["layer"] for r in rows) + 1, max(r["head"] for r in rows) + 1), np.nan)
    for r in rows:
        m[r["layer"], r["head"]] = r["value"]
    return m


def fig_js_heatmaps(data: ReportData) -> Figure | None:
    """Jensen–Shannon divergence of each head's attention from the base model's, for the
    runs with the largest and the smallest mean divergence."""
    rows = rows_of(data, "attention", "js_div")
    means = per_run(rows)
    if not means:
        return None
    order = sorted(means, key=means.get)
    picks = [("most changed", order[-1])] + (
        [("least changed", order[0])] if len(order) > 1 else []
    )
    mats = [_head_matrix(r for r in rows if r["run_id"] == rid) for _, rid in picks]
    vmax = max(float(np.nanmax(m)) for m in mats)
    fig, axes = new_figure(len(picks), ncols=2, w=5.0, h=4.0)
    runs = {r["run_id"]: r for r in data.runs}
    for ax, (what, rid), m in zip(axes, picks, mats, strict=True):
        im = ax.imshow(m, aspect="auto", cmap="magma", vmin=0, vmax=vmax, origin="lower")
        name = run_name(runs[rid], multi_seed(data)) if rid in runs else rid
        ax.set_title(f"{what}: {name}\n(mean JS = {means[rid]:.4f})", fontsize="small")
        ax.set_xticks(range(m.shape[1]))
        ax.set_yticks(range(m.shape[0]))
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
    fig.colorbar(im, ax=axes, label="JS divergence vs base (nats)")
    fig.suptitle("Attention change per head: the most and the least changed run")
    return fig


ABLATION_BARS = [(m, h) for m in ("tuned", "base") for h in ABLATED]
"""(model, head set) of each bar: the run's top heads and random heads, zeroed in the tuned
model and then in the base model."""


def _ablation_panel(ax: Axes, deltas: dict[tuple[str, str, str], Ablation]) -> None:
    """Grouped bars per task: accuracy change (pp) of each (model, head set), 95% CI."""
    tasks = sorted({task for task, _, _ in deltas})
    width = 0.8 / len(ABLATION_BARS)
    colors = {"top": "tab:red", "random": "tab:gray"}
    for k, (model, heads) in enumerate(ABLATION_BARS):
        vals = [deltas.get((t, model, heads), (np.nan,) * 3) for t in tasks]
        est = np.array([100 * v[0] for v in vals])
        # a percentile interval need not contain its estimate: clip, matplotlib wants >= 0
        err = 100 * np.array(
            [[max(v[0] - v[1], 0.0) for v in vals], [max(v[2] - v[0], 0.0) for v in vals]]
        )
        ax.bar(
            np.arange(len(tasks)) + (k - (len(ABLATION_BARS) - 1) / 2) * width,
            est,
            width,
            yerr=err,
            capsize=2,
            color=colors[heads],
            alpha=1.0 if model == "tuned" else 0.45,
            hatch="" if model == "tuned" else "//",
            label=f"{ABLATED[heads]}, {model} model",
        )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(tasks)), tasks, fontsize="small")
    ax.set_ylabel("Δ accuracy when zeroed (pp, 95% CI)")


def fig_ablation(data: ReportData) -> Figure | None:
    """Accuracy change (pp, paired 95% CI) when a run's most-changed heads are zeroed
    together, next to as many random other heads (the control) and to the same two head
    sets zeroed in the base model: a top-head drop says the tuned model relies on those
    heads only if it exceeds the random heads' and, for "relies since training", the base's."""
    deltas = ablation_deltas(data)
    runs = tuned_runs(data, deltas)
    if not runs:
        return None
    fig, axes = new_figure(len(runs), w=4.8)
    for ax, run in zip(axes, runs, strict=True):
        _ablation_panel(ax, deltas[run["run_id"]])
        ax.set_title(run_name(run, multi_seed(data)), fontsize="small")
    axes[0].legend(fontsize="x-small")
    fig.suptitle("Head ablation: top-JS heads vs random heads, in the tuned and the base model")
    return fig


def fig_cka(data: ReportData) -> Figure | None:
    """Linear CKA between the tuned and the base model's hidden states per layer (1 = same
    representation up to rotation and scale)."""
    values: dict[str, dict[int, float]] = defaultdict(dict)
    for r in rows_of(data, "cka", "cka"):
        values[r["run_id"]][r["layer"]] = r["value"]
    return _layer_lines(
        data,
        values,
        "linear CKA with base (0–1)",
        "Representation similarity to the base model per layer (CKA)",
    )
