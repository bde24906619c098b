"""The report's result figures: scores, retention and parameters against rank, cross-domain
heatmaps and loss curves.

Each ``fig_*`` function takes :class:`ReportData` and returns a ``Figure`` or None when the
sweep has nothing to show for it; :func:`render_figures` saves the ones that exist as PNG.
Ranked methods are drawn against the rank axis, trained unranked ones as dashed reference
lines; which is which comes from :class:`MethodKey`, not from the method's name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from rankscope.report.data import AggScore, ReportData, is_baseline
from rankscope.report.derived import cross_domain, param_counts
from rankscope.report.keys import MethodKey
from rankscope.report.plot import (
    Builder,
    FigureOut,
    color_map,
    method_colors,
    new_figure,
    rank_axis,
    save_figures,
    shared_legend,
)


def ranked_series(agg: Sequence[AggScore], task: str, train_task: str) -> dict[str, list[AggScore]]:
    """Per variant of the ranked method: one (train task, eval task)'s aggregated scores,
    sorted by rank."""
    out: dict[str, list[AggScore]] = defaultdict(list)
    for a in agg:
        if a.key.info.ranked and a.task == task and a.train_task == train_task:
            out[a.variant].append(a)
    return {v: sorted(pts, key=lambda a: a.rank or 0) for v, pts in sorted(out.items())}


def reference_value(
    agg: Sequence[AggScore], task: str, train_task: str, attr: str = "mean"
) -> float | None:
    """The first reference method's (full SFT's) value, drawn as a dashed line."""
    for a in agg:
        if a.key.info.reference and a.task == task and a.train_task == train_task:
            return getattr(a, attr)
    return None


def ranks_of(data: ReportData) -> list[int]:
    """The ranks of the sweep's ranked runs (the x ticks of every rank figure)."""
    return sorted({k.rank for k in map(MethodKey.of, data.runs) if k.info.ranked and k.rank})


def _variant_name(train_task: str, variant: str) -> str:
    return f"{train_task} ({variant})" if variant else train_task


def _plot_rank_lines(ax: Axes, data: ReportData, task: str, delta: bool = False) -> None:
    """Ranked-method lines per train task and variant, and the reference (full SFT) as a
    dashed line, as % (or pp when delta)."""
    colors = color_map(data.train_tasks)
    mean, std = ("delta_mean", "delta_std") if delta else ("mean", "std")
    for train in data.train_tasks:
        for k, (variant, pts) in enumerate(ranked_series(data.agg, task, train).items()):
            pts = [a for a in pts if getattr(a, mean) is not None]
            ax.errorbar(
                [a.rank for a in pts],
                [100 * getattr(a, mean) for a in pts],
                yerr=[100 * (getattr(a, std) or 0.0) for a in pts],
                color=colors[train],
                marker="os^D"[k % 4],
                capsize=3,
                label=_variant_name(train, variant),
            )
        full = reference_value(data.agg, task, train, mean)
        if full is not None:
            ax.axhline(100 * full, color=colors[train], ls="--", lw=1.2, label=f"{train}: full SFT")


# ------------------------------------------------------------------ result figures
def fig_accuracy_vs_rank(data: ReportData) -> Figure | None:
    """Primary metric (%) per eval task against LoRA rank (log2 axis), one line per train
    task (error bars: std across seeds); dashed lines are full SFT on the same train task,
    the black dotted line is the base model, the grey dash-dotted one chance (MCQ tasks)."""
    ranks = ranks_of(data)
    if not ranks or not data.agg:
        return None
    tasks = [t for t in data.eval_tasks if any(a.task == t for a in data.agg)]
    fig, axes = new_figure(len(tasks))
    base = {a.task: a.mean for a in data.agg if a.key.info.baseline}
    for ax, task in zip(axes, tasks, strict=True):
        _plot_rank_lines(ax, data, task)
        if task in base:
            ax.axhline(100 * base[task], color="black", ls=":", lw=1.5, label="base model")
        if task in data.chance:
            ax.axhline(100 * data.chance[task], color="grey", ls="-.", lw=1.0, label="chance")
        rank_axis(ax, ranks)
        metric = next(a.metric for a in data.agg if a.task == task)
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(data.task_header(task))
    shared_legend(fig, axes)
    fig.suptitle(
        "Eval score vs LoRA rank (lines: LoRA; dashed: full SFT; dotted: base; dash-dot: chance)"
    )
    return fig


def fig_retention_vs_rank(data: ReportData) -> Figure | None:
    """Change of the retention-task score vs the base model (percentage points) against
    LoRA rank; dashed lines are full SFT. Below zero means knowledge was forgotten."""
    ret, ranks = data.retention_task, ranks_of(data)
    if not ret or not ranks or not any(a.task == ret and not a.key.info.baseline for a in data.agg):
        return None
    fig, (ax,) = new_figure(1, w=6.5, h=4.2)
    _plot_rank_lines(ax, data, ret, delta=True)
    ax.axhline(0, color="black", lw=0.8, label="base model (0 pp)")
    rank_axis(ax, ranks)
    ax.set_ylabel(f"Δ {ret} vs base (pp)")
    ax.set_title(f"Retention change vs LoRA rank on {ret}")
    ax.legend(fontsize="small")
    return fig


def fig_cross_domain(data: ReportData) -> Figure | None:
    """Δ vs base (pp) for every train task (rows) and eval task (columns), one panel per
    method; blue is better than base, red worse; outlined cells are in-domain."""
    mats = cross_domain(data.agg, data.train_tasks, data.eval_tasks)
    mats = [m for m in mats if any(v is not None for row in m.values for v in row)]
    if not mats:
        return None
    vals = np.array(
        [[[np.nan if v is None else 100 * v for v in row] for row in m.values] for m in mats],
        dtype=float,
    )
    vmax = max(1.0, float(np.nanmax(np.abs(vals))) if np.isfinite(vals).any() else 1.0)
    ncols = 2 if len(mats) == 4 else min(3, len(mats))
    n_tr, n_ev = len(data.train_tasks), len(data.eval_tasks)
    fig, axes = new_figure(len(mats), ncols, w=1.2 + 0.9 * n_ev, h=1.4 + 0.6 * n_tr)
    im = None
    for ax, m, v in zip(axes, mats, vals, strict=True):
        im = ax.imshow(np.ma.masked_invalid(v), cmap="RdBu", vmin=-vmax, vmax=vmax, aspect="auto")
        _annotate_heatmap(ax, v, vmax, m.train_tasks, m.eval_tasks)
        ax.set_xticks(
            range(n_ev),
            [data.task_header(e) for e in m.eval_tasks],
            rotation=35,
            ha="right",
            fontsize="small",
        )
        ax.set_yticks(range(n_tr), m.train_tasks, fontsize="small")
        ax.set_xlabel("eval task")
        ax.set_ylabel("train task")
        ax.set_title(m.label)
    fig.colorbar(im, ax=axes, label="Δ vs base (pp)", shrink=0.8)
    fig.legend(
        [Patch(fill=False, ec="black", lw=2)],
        ["in-domain (eval = train task)"],
        loc="outside lower center",
        fontsize="small",
    )
    fig.suptitle("Cross-domain change vs base (pp), per method")
    return fig


def _annotate_heatmap(
    ax: Axes, v: np.ndarray, vmax: float, rows: Sequence[str], cols: Sequence[str]
) -> None:
    for i, train in enumerate(rows):
        for j, task in enumerate(cols):
            if np.isfinite(v[i, j]):
                dark = abs(v[i, j]) > 0.6 * vmax
                ax.text(
                    j,
                    i,
                    f"{v[i, j]:+.1f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "black",
                )
            if train == task:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="black", lw=2))


def fig_params_vs_rank(data: ReportData) -> Figure | None:
    """Trainable parameters against LoRA rank (log-log); dashed: full SFT, dotted: the
    whole model."""
    counts = [p for p in param_counts(data.runs) if p.trainable]
    ranked = [p for p in counts if p.key.info.ranked and p.rank]
    if not ranked:
        return None
    fig, (ax,) = new_figure(1, w=6.0, h=4.2)
    lines: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for p in ranked:
        lines[(p.key.info.prose or p.key.method, p.key.variant)].append((p.rank, p.trainable))
    for k, ((name, variant), pts) in enumerate(sorted(lines.items())):
        pts.sort()
        ax.plot(
            [r for r, _ in pts],
            [n for _, n in pts],
            marker="os^D"[k % 4],
            label=f"{name}{f' ({variant})' if variant else ''}",
        )
    for p in counts:
        if p.key.info.reference:
            ax.axhline(p.trainable, color="black", ls="--", label=f"{p.label} SFT")
    total = next((p.total for p in counts if p.total), None)
    if total:
        ax.axhline(total, color="grey", ls=":", label="total model parameters")
    rank_axis(ax, [p.rank for p in ranked])
    ax.set_yscale("log")
    ax.set_ylabel("trainable parameters (log scale)")
    ax.set_title("Trainable parameters vs LoRA rank")
    ax.legend(fontsize="small")
    return fig


def fig_loss_curves(data: ReportData) -> Figure | None:
    """Training loss per optimizer step of every run, one panel per train task."""
    runs = {r["run_id"]: r for r in data.runs if not is_baseline(r)}
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in data.train_log:
        if row["run_id"] in runs and row.get("loss") is not None:
            curves[row["run_id"]].append((row["step"], row["loss"]))
    tasks = [t for t in data.train_tasks if any(runs[r]["train_task"] == t for r in curves)]
    if not tasks:
        return None
    fig, axes = new_figure(len(tasks))
    keys = {rid: MethodKey.of(r) for rid, r in runs.items()}
    colors = method_colors(keys.values())
    seeds = {r.get("seed") for r in runs.values()}
    for ax, task in zip(axes, tasks, strict=True):
        for rid in sorted(curves, key=lambda r: keys[r].sort_key):
            run = runs[rid]
            if run["train_task"] != task:
                continue
            pts = sorted(curves[rid])
            lab = keys[rid].label + (f", seed {run.get('seed')}" if len(seeds) > 1 else "")
            ax.plot(
                [s for s, _ in pts],
                [v for _, v in pts],
                color=colors[keys[rid]],
                lw=1.2,
                ls="-" if run.get("seed") == min(seeds) else "--",
                label=lab,
            )
        ax.set_title(f"trained on {task}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("train loss (nats/token)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.suptitle("Training loss per run")
    return fig


RESULT_FIGURES: list[tuple[str, str, Builder]] = [
    ("accuracy_vs_rank", "Eval score vs LoRA rank", fig_accuracy_vs_rank),
    ("retention_vs_rank", "Retention change vs LoRA rank", fig_retention_vs_rank),
    ("cross_domain", "Cross-domain change per method", fig_cross_domain),
    ("params_vs_rank", "Trainable parameters vs LoRA rank", fig_params_vs_rank),
    ("loss_curves", "Training loss", fig_loss_curves),
]


def render_figures(data: ReportData, out_dir: Path) -> list[FigureOut]:
    """The result figures (accuracy, retention, cross-domain, parameters, loss)."""
    return save_figures(data, out_dir, RESULT_FIGURES)
