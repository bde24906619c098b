"""Shared plotting helpers of the report's figures (matplotlib, Agg backend, no pyplot state).

Figures are built with ``Figure`` directly, not pyplot, so nothing global is kept between
reports and no display is needed; every figure module draws through these helpers so the
colours, rank axis and legends agree across figures.

Every aggregate a figure plots is a mean over seeds with its 95% t-interval
(:func:`rankscope.stats.mean_ci`, carried by ``AggScore.ci`` / ``delta_ci``). A figure first
computes its lines as :class:`Series` of :class:`Point` (the numbers, testable without an
image) and then draws them with :func:`draw_series`, which adds an error bar wherever the
interval exists (two seeds or more) and none for a single seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from rankscope.report.data import ReportData  # noqa: E402
from rankscope.report.keys import MethodKey  # noqa: E402
from rankscope.stats import Interval  # noqa: E402

DPI = 110


@dataclass(frozen=True)
class FigureOut:
    """A saved figure: file name (in the figures dir), title, caption, path."""

    name: str
    title: str
    caption: str
    path: Path


Builder = Callable[[ReportData], "Figure | None"]


@dataclass(frozen=True)
class Point:
    """One plotted aggregate: x, the mean over `n` seeds and its 95% interval (fractions;
    lo/hi None with one seed, and then no error bar is drawn)."""

    x: float
    est: float
    lo: float | None
    hi: float | None
    n: int

    @classmethod
    def of(cls, x: float, ci: Interval) -> Point:
        return cls(float(x), ci.est, ci.lo, ci.hi, ci.n)

    @property
    def has_ci(self) -> bool:
        return self.lo is not None and self.hi is not None


@dataclass(frozen=True)
class Series:
    """One line of a figure: its points sorted by x, and the x values marked on it (the lr
    selected on validation, in the learning-rate figure)."""

    label: str
    points: tuple[Point, ...]
    marked: tuple[float, ...] = ()
    key: Any = None
    """What the line stands for (a MethodKey, a (variant, rule, lr) tuple...), for colours."""

    @property
    def xs(self) -> list[float]:
        return [p.x for p in self.points]

    @property
    def ests(self) -> list[float]:
        return [p.est for p in self.points]


def series(
    label: str, points: Iterable[Point], marked: Iterable[float] = (), key: Any = None
) -> Series:
    """A `Series` with its points sorted by x."""
    pts = tuple(sorted(points, key=lambda p: p.x))
    return Series(label, pts, tuple(sorted(marked)), key)


def draw_series(
    ax: Axes, line: Series, scale: float = 100.0, marked_label: str | None = None, **style: Any
) -> None:
    """The line (means × `scale`), an error bar (95% CI) at every point that has one, and a
    hollow star on each marked x."""
    (handle,) = ax.plot(line.xs, [scale * y for y in line.ests], label=line.label, **style)
    color = handle.get_color()
    with_ci = [p for p in line.points if p.has_ci]
    if with_ci:
        ax.errorbar(
            [p.x for p in with_ci],
            [scale * p.est for p in with_ci],
            yerr=[
                [scale * (p.est - p.lo) for p in with_ci],  # type: ignore[operator]
                [scale * (p.hi - p.est) for p in with_ci],  # type: ignore[operator]
            ],
            fmt="none",
            ecolor=color,
            capsize=3,
            lw=1.0,
        )
    marks = [p for p in line.points if p.x in line.marked]
    if marks:
        ax.plot(
            [p.x for p in marks],
            [scale * p.est for p in marks],
            ls="none",
            marker="*",
            ms=15,
            mfc="none",
            mec=color,
            mew=1.5,
            label=marked_label,
        )


def draw_reference(ax: Axes, ci: Interval, label: str, scale: float = 100.0, **style: Any) -> None:
    """A horizontal line at the mean and, when the interval exists, a shaded 95% CI band."""
    line = ax.axhline(scale * ci.est, label=label, **style)
    if ci.lo is not None and ci.hi is not None:
        ax.axhspan(scale * ci.lo, scale * ci.hi, color=line.get_color(), alpha=0.12, lw=0)


def seeds_note(ns: Iterable[int]) -> str:
    """'mean over 3 seeds, 95% CI' (or '1–3 seeds', or '1 seed, no CI') for titles."""
    ns = sorted(set(ns))
    if not ns:
        return ""
    if ns[-1] < 2:
        return "1 seed, no CI"
    span = str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    return f"mean over {span} seeds, 95% CI" + (" where n ≥ 2" if ns[0] < 2 else "")


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


def _full_order(key: MethodKey) -> tuple:
    """`sort_key`, then α and lr: a total order, so colours never depend on set order."""
    return (key.sort_key, key.alpha or 0.0, key.lr or 0.0)


def method_colors(keys: Iterable[MethodKey]) -> dict[MethodKey, tuple]:
    """Colour per method key: ranked ones along viridis in key order, trained references
    black, the rest (the base model) grey; the same key has the same colour in a figure."""
    keys = set(keys)
    ranked = sorted((k for k in keys if k.info.ranked), key=_full_order)
    cmap = matplotlib.colormaps["viridis"]
    out = {k: cmap(i / max(1, len(ranked) - 1) * 0.9) for i, k in enumerate(ranked)}
    for k in keys:
        out.setdefault(k, (0.0, 0.0, 0.0, 1.0) if k.info.reference else (0.5, 0.5, 0.5, 1))
    return out


def rank_axis(ax: Axes, ranks: Sequence[int], label: str = "LoRA rank r (log2 scale)") -> None:
    ranks = sorted(set(ranks))
    ax.set_xscale("log", base=2)
    if ranks:
        ax.set_xticks(ranks, [str(r) for r in ranks])
        ax.set_xlim(ranks[0] / 1.3, ranks[-1] * 1.3)
    ax.set_xlabel(label)
    ax.grid(True, alpha=0.3)


def shared_legend(fig: Figure, axes: Sequence[Axes]) -> None:
    """One legend for the whole figure with every distinct entry of its axes, in as many
    columns as the figure's width holds (at most 4)."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, handle)
    if seen:
        fig.legend(
            list(seen.values()),
            list(seen),
            loc="outside lower center",
            ncols=max(1, min(4, len(seen), int(fig.get_figwidth() / 2.4))),
            fontsize="small",
        )


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
