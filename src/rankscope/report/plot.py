"""Shared plotting helpers of the report's figures (matplotlib, Agg backend, no pyplot state).

Figures are built with ``Figure`` directly, not pyplot, so nothing global is kept between
reports and no display is needed; every figure module draws through these helpers so the
colours, rank axis and legends agree across figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from rankscope.report.data import ReportData  # noqa: E402
from rankscope.report.keys import MethodKey  # noqa: E402

DPI = 110


@dataclass(frozen=True)
class FigureOut:
    """A saved figure: file name (in the figures dir), title, caption, path."""

    name: str
    title: str
    caption: str
    path: Path


Builder = Callable[[ReportData], "Figure | None"]


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


def method_colors(keys: Iterable[MethodKey]) -> dict[MethodKey, tuple]:
    """Colour per method key: ranked ones along viridis in key order, trained references
    black, the rest (the base model) grey; the same key has the same colour in a figure."""
    keys = set(keys)
    ranked = sorted((k for k in keys if k.info.ranked), key=lambda k: k.sort_key)
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
