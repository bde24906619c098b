"""Figures of the spectra of the weight updates ΔW: norms, per-layer drift, intruder
dimensions and rank measures, each against the rank of the ranked method.

Each figure exists only when the store holds the rows it needs.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from rankscope.report.analysis_rows import (
    has_ranked,
    module_type,
    multi_seed,
    per_run,
    rank_panel,
    rows_of,
    run_name,
    tuned_runs,
)
from rankscope.report.data import ReportData
from rankscope.report.keys import Row
from rankscope.report.plot import color_map, new_figure


def fig_norm_vs_rank(data: ReportData) -> Figure | None:
    """Mean ‖ΔW‖_F over layers per module type against LoRA rank, one line per train task;
    dashed: full SFT; dotted: the fitted a + b·ln r curve."""
    rows = rows_of(data, "spectral", "fro")
    types = sorted({module_type(r["module"]) for r in rows})
    if not types or not has_ranked(data, per_run(rows)):
        return None
    fig, axes = new_figure(len(types), ncols=4, w=3.8)
    for ax, mtype in zip(axes, types, strict=True):
        rank_panel(ax, data, per_run(rows, mtype=mtype), "mean ‖ΔW‖_F (weight units)")
        _overlay_fits(ax, data, mtype)
        ax.set_title(mtype)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes:  # one shared legend below the panels instead of one per panel
        if ax.get_legend():
            ax.get_legend().remove()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize="x-small")
    fig.suptitle("Update norm ‖ΔW‖_F vs LoRA rank (mean over layers; dotted: a + b·ln r fit)")
    return fig


def fits_by_train_task(data: ReportData, mtype: str) -> dict[str, dict[str, float]]:
    """{train task: {fit metric: value}} of one module type's norm-vs-rank fit (the store's
    `fits` table)."""
    fits: dict[str, dict[str, float]] = defaultdict(dict)
    for r in data.fits:
        if r["module"] == mtype and r["value"] is not None:
            fits[r["train_task"]][r["metric"]] = r["value"]
    return fits


def _overlay_fits(ax: Axes, data: ReportData, mtype: str) -> None:
    """The fitted a + b·ln r curve of each train task, dotted, over the panel's rank range."""
    fits = fits_by_train_task(data, mtype)
    lo, hi = ax.get_xlim()
    grid = np.exp(np.linspace(math.log(lo), math.log(hi), 50))
    colors = color_map(data.train_tasks)
    for train, fit in fits.items():
        a, b = fit.get("log_a", math.nan), fit.get("log_b", math.nan)
        if train in colors and math.isfinite(a) and math.isfinite(b):
            r2 = fit.get("log_r2", math.nan)
            ax.plot(
                grid,
                a + b * np.log(grid),
                color=colors[train],
                ls=":",
                lw=1.2,
                label=f"{train}: fit (R²={r2:.2f})",
            )
    ax.set_xlim(lo, hi)
    ax.legend(fontsize="x-small")


def _layer_matrix(data: ReportData, rows: list[Row]) -> tuple[list[Row], list[int], np.ndarray]:
    """Runs × layers matrix of the mean over modules."""
    cells: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in rows:
        cells[(r["run_id"], r["layer"])].append(r["value"])
    runs = tuned_runs(data, (k[0] for k in cells))
    layers = sorted({k[1] for k in cells})
    m = np.array(
        [
            [
                np.mean(cells[(r["run_id"], la)]) if (r["run_id"], la) in cells else np.nan
                for la in layers
            ]
            for r in runs
        ],
        dtype=float,
    )
    return runs, layers, m


DRIFT_PANELS = {  # metric: (colour bar label, colour map)
    "rel_fro": ("‖ΔW‖_F / ‖W₀‖_F (ratio)", "viridis"),
    "subspace_sim_left": ("subspace similarity φ of top-k left singular vectors", "magma"),
    "sim_left": ("index-matched |cos| of top-k left singular vectors", "magma"),
}
"""The drift heatmaps, in order. φ (Hu et al. 2021) compares the top-k spans, at a k below
the matrix size; the index-matched cosine (the paper's measure) also drops where nearly tied
singular vectors merely swap places. Stores from before φ existed show the other two."""


def fig_drift_heatmaps(data: ReportData) -> Figure | None:
    """Relative update size ‖ΔW‖_F/‖W₀‖_F and the alignment of the top left singular
    vectors with the base model's (subspace similarity, index-matched cosine), per layer
    (mean over modules) and run."""
    panels = [(m, rows_of(data, "spectral", m)) for m in DRIFT_PANELS]
    panels = [(m, rows) for m, rows in panels if rows]
    if not panels:
        return None
    n_runs = len({r["run_id"] for _, rows in panels for r in rows})
    fig, axes = new_figure(len(panels), ncols=3, w=6.0, h=1.2 + 0.28 * n_runs)
    titles = DRIFT_PANELS
    for ax, (metric, rows) in zip(axes, panels, strict=True):
        runs, layers, m = _layer_matrix(data, rows)
        im = ax.imshow(np.ma.masked_invalid(m), aspect="auto", cmap=titles[metric][1])
        ax.set_yticks(
            range(len(runs)), [run_name(r, multi_seed(data)) for r in runs], fontsize="x-small"
        )
        ax.set_xticks(range(len(layers)), [str(la) for la in layers], fontsize="small")
        ax.set_xlabel("layer")
        ax.set_ylabel("run")
        ax.set_title(f"{metric} per layer (mean over modules)")
        fig.colorbar(im, ax=ax, label=titles[metric][0])
    fig.suptitle("Per-layer drift of the weights from the base model")
    return fig


def fig_intruders_vs_rank(data: ReportData) -> Figure | None:
    """Top singular vectors of the tuned weights with no close match in the base weights
    (summed over modules and layers), per similarity threshold ε; dashed: full SFT."""
    rows = rows_of(data, "spectral", lambda m: m.startswith("intruders_"))
    metrics = sorted({r["metric"] for r in rows}, key=lambda m: float(m.split("_", 1)[1]))
    if not metrics or not has_ranked(data, per_run(rows)):
        return None
    fig, axes = new_figure(len(metrics), ncols=3, w=4.6)
    for ax, metric in zip(axes, metrics, strict=True):
        vals = per_run((r for r in rows if r["metric"] == metric), reduce="sum")
        rank_panel(ax, data, vals, "intruder dimensions (count, all modules)")
        ax.set_title(f"ε = {metric.split('_', 1)[1]}")
    fig.suptitle("Intruder dimensions vs LoRA rank (sum over modules and layers)")
    return fig


def fig_rank_measures(data: ReportData) -> Figure | None:
    """Stable rank and effective rank of the update (mean over modules and layers) against
    LoRA rank; dashed: full SFT."""
    panels = [(m, per_run(rows_of(data, "spectral", m))) for m in ("stable_rank", "effective_rank")]
    panels = [(m, v) for m, v in panels if v and has_ranked(data, v)]
    if not panels:
        return None
    fig, axes = new_figure(len(panels), ncols=2, w=5.0)
    for ax, (metric, vals) in zip(axes, panels, strict=True):
        rank_panel(ax, data, vals, f"{metric.replace('_', ' ')} of ΔW (dimensions)")
        ax.set_title(metric)
    fig.suptitle("Stable and effective rank of ΔW vs LoRA rank (mean over modules, layers)")
    return fig
