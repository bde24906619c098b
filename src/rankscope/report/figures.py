"""The report's result figures (matplotlib, Agg backend, no pyplot state).

Each ``fig_*`` function takes :class:`ReportData` and returns a ``Figure`` or None when the
sweep has nothing to show for it; :func:`render_figures` saves the ones that exist as PNG.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from rankscope.report.tables import (  # noqa: E402
    AggScore,
    ReportData,
    cross_domain,
    label_sort_key,
    method_label,
    param_counts,
)

DPI = 110


@dataclass(frozen=True)
class FigureOut:
    """A saved figure: file name (in the figures dir), title, caption, path."""

    name: str
    title: str
    caption: str
    path: Path


Builder = Callable[[ReportData], "Figure | None"]


# ------------------------------------------------------------------ shared helpers
def new_figure(
    n_panels: int, ncols: int = 3, w: float = 4.2, h: float = 3.3
) -> tuple[Figure, list[Axes]]:
    """A figure with ``n_panels`` axes in a grid; spare grid cells are hidden."""
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(w * ncols, h * nrows + 0.6), layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel())
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def color_map(keys: Sequence[str]) -> dict[str, tuple]:
    """A stable tab10 colour per key (train task), in the given order."""
    cmap = matplotlib.colormaps["tab10"]
    return {k: cmap(i % 10) for i, k in enumerate(keys)}


def label_colors(labels: Sequence[str]) -> dict[str, tuple]:
    """Colour per method label: full black, LoRA ranks along viridis, base grey."""
    lora = sorted({x for x in labels if x.startswith("lora")}, key=label_sort_key)
    cmap = matplotlib.colormaps["viridis"]
    out: dict[str, tuple] = {x: cmap(i / max(1, len(lora) - 1) * 0.9) for i, x in enumerate(lora)}
    for x in labels:
        out.setdefault(x, (0.0, 0.0, 0.0, 1.0) if x.startswith("full") else (0.5, 0.5, 0.5, 1))
    return out


def rank_axis(ax: Axes, ranks: Sequence[int], label: str = "LoRA rank r (log2 scale)") -> None:
    ranks = sorted(set(ranks))
    ax.set_xscale("log", base=2)
    if ranks:
        ax.set_xticks(ranks, [str(r) for r in ranks])
        ax.set_xlim(ranks[0] / 1.3, ranks[-1] * 1.3)
    ax.set_xlabel(label)
    ax.grid(True, alpha=0.3)


def lora_series(agg: Sequence[AggScore], task: str, train_task: str) -> dict[str, list[AggScore]]:
    """Per LoRA variant: one (train task, eval task)'s aggregated scores, sorted by rank."""
    out: dict[str, list[AggScore]] = defaultdict(list)
    for a in agg:
        if a.method == "lora" and a.task == task and a.train_task == train_task:
            out[a.variant].append(a)
    return {v: sorted(pts, key=lambda a: a.rank or 0) for v, pts in sorted(out.items())}


def full_value(
    agg: Sequence[AggScore], task: str, train_task: str, attr: str = "mean"
) -> float | None:
    for a in agg:
        if a.method == "full" and a.task == task and a.train_task == train_task:
            return getattr(a, attr)
    return None


def lora_ranks(data: ReportData) -> list[int]:
    return sorted({r["rank"] for r in data.runs if r["method"] == "lora" and r.get("rank")})


def _variant_name(train_task: str, variant: str) -> str:
    return f"{train_task} ({variant})" if variant else train_task


def _plot_rank_lines(ax: Axes, data: ReportData, task: str, delta: bool = False) -> None:
    """LoRA lines per train task and its full-SFT dashed line, as % (or pp when delta)."""
    colors = color_map(data.train_tasks)
    mean, std = ("delta_mean", "delta_std") if delta else ("mean", "std")
    for train in data.train_tasks:
        for k, (variant, pts) in enumerate(lora_series(data.agg, task, train).items()):
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
        full = full_value(data.agg, task, train, mean)
        if full is not None:
            ax.axhline(100 * full, color=colors[train], ls="--", lw=1.2, label=f"{train}: full SFT")


# ------------------------------------------------------------------ result figures
def fig_accuracy_vs_rank(data: ReportData) -> Figure | None:
    """Primary metric (%) per eval task against LoRA rank (log2 axis), one line per train
    task (error bars: std across seeds); dashed lines are full SFT on the same train task,
    the black dotted line is the base model, the grey dash-dotted one chance (MCQ tasks)."""
    ranks = lora_ranks(data)
    if not ranks or not data.agg:
        return None
    tasks = [t for t in data.eval_tasks if any(a.task == t for a in data.agg)]
    fig, axes = new_figure(len(tasks))
    base = {a.task: a.mean for a in data.agg if a.method == "base"}
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
    _shared_legend(fig, axes)
    fig.suptitle(
        "Eval score vs LoRA rank (lines: LoRA; dashed: full SFT; dotted: base; dash-dot: chance)"
    )
    return fig


def _shared_legend(fig: Figure, axes: Sequence[Axes]) -> None:
    """One legend for the whole figure with every distinct entry of its axes."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, handle)
    if seen:
        fig.legend(
            list(seen.values()),
            list(seen),
            loc="outside lower center",
            ncols=min(4, len(seen)),
            fontsize="small",
        )


def fig_retention_vs_rank(data: ReportData) -> Figure | None:
    """Change of the retention-task score vs the base model (percentage points) against
    LoRA rank; dashed lines are full SFT. Below zero means knowledge was forgotten."""
    ret, ranks = data.retention_task, lora_ranks(data)
    if not ret or not ranks or not any(a.task == ret and a.method != "base" for a in data.agg):
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
    lora = [p for p in counts if p.rank]
    if not lora:
        return None
    fig, (ax,) = new_figure(1, w=6.0, h=4.2)
    by_variant: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for p in lora:
        by_variant[p.label.partition(" (")[2].rstrip(")")].append((p.rank, p.trainable))
    for k, (variant, pts) in enumerate(sorted(by_variant.items())):
        pts.sort()
        ax.plot(
            [r for r, _ in pts],
            [n for _, n in pts],
            marker="os^D"[k % 4],
            label=f"LoRA{f' ({variant})' if variant else ''}",
        )
    for p in counts:
        if p.label.startswith("full"):
            ax.axhline(p.trainable, color="black", ls="--", label=f"{p.label} SFT")
    total = next((p.total for p in counts if p.total), None)
    if total:
        ax.axhline(total, color="grey", ls=":", label="total model parameters")
    rank_axis(ax, [p.rank for p in lora])
    ax.set_yscale("log")
    ax.set_ylabel("trainable parameters (log scale)")
    ax.set_title("Trainable parameters vs LoRA rank")
    ax.legend(fontsize="small")
    return fig


def fig_loss_curves(data: ReportData) -> Figure | None:
    """Training loss per optimizer step of every run, one panel per train task."""
    runs = {r["run_id"]: r for r in data.runs if r["method"] != "base"}
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in data.train_log:
        if row["run_id"] in runs and row.get("loss") is not None:
            curves[row["run_id"]].append((row["step"], row["loss"]))
    tasks = [t for t in data.train_tasks if any(runs[r]["train_task"] == t for r in curves)]
    if not tasks:
        return None
    fig, axes = new_figure(len(tasks))
    colors = label_colors([method_label(r) for r in runs.values()])
    seeds = {r.get("seed") for r in runs.values()}
    for ax, task in zip(axes, tasks, strict=True):
        for rid in sorted(curves, key=lambda r: label_sort_key(method_label(runs[r]))):
            run = runs[rid]
            if run["train_task"] != task:
                continue
            pts = sorted(curves[rid])
            lab = method_label(run) + (f", seed {run.get('seed')}" if len(seeds) > 1 else "")
            ax.plot(
                [s for s, _ in pts],
                [v for _, v in pts],
                color=colors[method_label(run)],
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


def caption_of(build: Builder) -> str:
    """A figure's caption is its builder's docstring, on one line."""
    return " ".join((build.__doc__ or "").split())


def save_figures(
    data: ReportData, out_dir: Path, specs: Sequence[tuple[str, str, Builder]]
) -> list[FigureOut]:
    """Build and save each figure that has data; a figure is released right after saving."""
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for name, title, build in specs:
        fig = build(data)
        if fig is None:
            continue
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=DPI)
        fig.clear()
        saved.append(FigureOut(name, title, caption_of(build), path))
    return saved


def render_figures(data: ReportData, out_dir: Path) -> list[FigureOut]:
    """The result figures (accuracy, retention, cross-domain, parameters, loss)."""
    return save_figures(data, out_dir, RESULT_FIGURES)
