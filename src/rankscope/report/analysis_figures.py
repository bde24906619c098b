"""Figures and tables of the analysis rows (spectra of ΔW, attention, CKA, head ablation).

Each figure exists only when the store holds the rows it needs; with no analysis rows at all
:func:`render_analysis_figures` returns an empty list and the report has no analysis section.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rankscope.report.figures import (
    Builder,
    FigureOut,
    color_map,
    label_colors,
    new_figure,
    rank_axis,
    save_figures,
)
from rankscope.report.tables import (
    ReportData,
    Row,
    Table,
    fmt_sig,
    label_sort_key,
    method_label,
    sort_runs,
)

SPECTRAL_SUMMARY = ("rel_fro", "stable_rank", "effective_rank", "sim_left")


# ------------------------------------------------------------------ row helpers
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
    return sort_runs(r for r in data.runs if r["run_id"] in ids and r["method"] != "base")


def run_name(run: Row, multi_seed: bool) -> str:
    name = f"{run.get('train_task') or 'base'} · {method_label(run)}"
    return name + (f" · s{run.get('seed')}" if multi_seed else "")


def _multi_seed(data: ReportData) -> bool:
    return len({r.get("seed") for r in data.runs if r["method"] != "base"}) > 1


def by_config(data: ReportData, values: dict[str, float]) -> dict[tuple, float]:
    """Average per-run values across seeds: key (train task, method, rank, variant)."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in tuned_runs(data, values):
        key = (r["train_task"], r["method"], r.get("rank"), r.get("variant") or "")
        groups[key].append(values[r["run_id"]])
    return {k: float(np.mean(v)) for k, v in groups.items()}


def _rank_panel(ax: Axes, data: ReportData, values: dict[str, float], ylabel: str) -> None:
    """Value vs LoRA rank, one line per train task, full SFT as a dashed line."""
    conf = by_config(data, values)
    colors = color_map(data.train_tasks)
    for train in data.train_tasks:
        for variant in sorted({k[3] for k in conf if k[0] == train and k[1] == "lora"}):
            pts = sorted(
                (k[2], v)
                for k, v in conf.items()
                if k[0] == train and k[1] == "lora" and k[3] == variant
            )
            ax.plot(
                [r for r, _ in pts],
                [v for _, v in pts],
                marker="o",
                color=colors[train],
                label=train + (f" ({variant})" if variant else ""),
            )
        for k, v in conf.items():
            if k[0] == train and k[1] == "full":
                ax.axhline(v, color=colors[train], ls="--", lw=1.2, label=f"{train}: full SFT")
    rank_axis(ax, [k[2] for k in conf if k[1] == "lora"])
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="x-small")


def _has_lora(data: ReportData, values: dict[str, float]) -> bool:
    return any(r["method"] == "lora" for r in tuned_runs(data, values))


# ------------------------------------------------------------------ spectral figures
def fig_norm_vs_rank(data: ReportData) -> Figure | None:
    """Mean ‖ΔW‖_F over layers per module type against LoRA rank, one line per train task;
    dashed: full SFT; dotted: the fitted a + b·ln r curve."""
    rows = rows_of(data, "spectral", "fro")
    types = sorted({module_type(r["module"]) for r in rows})
    if not types or not _has_lora(data, per_run(rows)):
        return None
    fig, axes = new_figure(len(types), ncols=4, w=3.8)
    for ax, mtype in zip(axes, types, strict=True):
        _rank_panel(ax, data, per_run(rows, mtype=mtype), "mean ‖ΔW‖_F (weight units)")
        _overlay_fits(ax, data, mtype)
        ax.set_title(mtype)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes:  # one shared legend below the panels instead of one per panel
        if ax.get_legend():
            ax.get_legend().remove()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize="x-small")
    fig.suptitle("Update norm ‖ΔW‖_F vs LoRA rank (mean over layers; dotted: a + b·ln r fit)")
    return fig


def _overlay_fits(ax: Axes, data: ReportData, mtype: str) -> None:
    fits: dict[str, dict[str, float]] = defaultdict(dict)
    for r in data.analysis:
        if r["kind"] == "spectral_fit" and r["module"] == mtype and r["value"] is not None:
            fits[r["run_id"]][r["metric"]] = r["value"]
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


def fig_drift_heatmaps(data: ReportData) -> Figure | None:
    """Relative update size ‖ΔW‖_F/‖W₀‖_F and the alignment of the top left singular
    vectors with the base model's, per layer (mean over modules) and run."""
    panels = [(m, rows_of(data, "spectral", m)) for m in ("rel_fro", "sim_left")]
    panels = [(m, rows) for m, rows in panels if rows]
    if not panels:
        return None
    n_runs = len({r["run_id"] for _, rows in panels for r in rows})
    fig, axes = new_figure(len(panels), ncols=2, w=6.0, h=1.2 + 0.28 * n_runs)
    titles = {
        "rel_fro": ("‖ΔW‖_F / ‖W₀‖_F (ratio)", "viridis"),
        "sim_left": ("matched cosine of top-k left singular vectors", "magma"),
    }
    for ax, (metric, rows) in zip(axes, panels, strict=True):
        runs, layers, m = _layer_matrix(data, rows)
        im = ax.imshow(np.ma.masked_invalid(m), aspect="auto", cmap=titles[metric][1])
        ax.set_yticks(
            range(len(runs)), [run_name(r, _multi_seed(data)) for r in runs], fontsize="x-small"
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
    if not metrics or not _has_lora(data, per_run(rows)):
        return None
    fig, axes = new_figure(len(metrics), ncols=3, w=4.6)
    for ax, metric in zip(axes, metrics, strict=True):
        vals = per_run((r for r in rows if r["metric"] == metric), reduce="sum")
        _rank_panel(ax, data, vals, "intruder dimensions (count, all modules)")
        ax.set_title(f"ε = {metric.split('_', 1)[1]}")
    fig.suptitle("Intruder dimensions vs LoRA rank (sum over modules and layers)")
    return fig


def fig_rank_measures(data: ReportData) -> Figure | None:
    """Stable rank and effective rank of the update (mean over modules and layers) against
    LoRA rank; dashed: full SFT."""
    panels = [(m, per_run(rows_of(data, "spectral", m))) for m in ("stable_rank", "effective_rank")]
    panels = [(m, v) for m, v in panels if v and _has_lora(data, v)]
    if not panels:
        return None
    fig, axes = new_figure(len(panels), ncols=2, w=5.0)
    for ax, (metric, vals) in zip(axes, panels, strict=True):
        _rank_panel(ax, data, vals, f"{metric.replace('_', ' ')} of ΔW (dimensions)")
        ax.set_title(metric)
    fig.suptitle("Stable and effective rank of ΔW vs LoRA rank (mean over modules, layers)")
    return fig


# ------------------------------------------------------------------ attention figures
def _layer_lines(
    data: ReportData, values: dict[str, dict[int, float]], ylabel: str, title: str
) -> Figure | None:
    """Value per layer, one panel per train task, one line per run."""
    runs = tuned_runs(data, values)
    tasks = [t for t in data.train_tasks if any(r["train_task"] == t for r in runs)]
    if not tasks:
        return None
    fig, axes = new_figure(len(tasks), w=4.6)
    colors = label_colors([method_label(r) for r in runs])
    seeds = sorted({r.get("seed") for r in runs}, key=lambda s: (s is None, s))
    for ax, task in zip(axes, tasks, strict=True):
        for r in (r for r in runs if r["train_task"] == task):
            pts = sorted(values[r["run_id"]].items())
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker=".",
                color=colors[method_label(r)],
                ls="-" if r.get("seed") == seeds[0] else "--",
                label=method_label(r) + (f", s{r['seed']}" if len(seeds) > 1 else ""),
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
    base_ids = {r["run_id"] for r in data.runs if r["method"] == "base"}
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
        name = run_name(runs[rid], _multi_seed(data)) if rid in runs else rid
        ax.set_title(f"{what}: {name}\n(mean JS = {means[rid]:.4f})", fontsize="small")
        ax.set_xticks(range(m.shape[1]))
        ax.set_yticks(range(m.shape[0]))
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
    fig.colorbar(im, ax=axes, label="JS divergence vs base (nats)")
    fig.suptitle("Attention change per head: the most and the least changed run")
    return fig


def fig_ablation(data: ReportData) -> Figure | None:
    """Change of each eval task's score (pp) when one of the most-changed heads is zeroed."""
    rows = rows_of(data, "ablation", lambda m: m.startswith("delta:"))
    runs = tuned_runs(data, (r["run_id"] for r in rows))
    if not runs:
        return None
    fig, axes = new_figure(len(runs), w=4.4)
    for ax, run in zip(axes, runs, strict=True):
        mine = [r for r in rows if r["run_id"] == run["run_id"]]
        heads = sorted({(r["layer"], r["head"]) for r in mine})
        tasks = sorted({r["metric"].split(":", 1)[1] for r in mine})
        vals = {(r["layer"], r["head"], r["metric"].split(":", 1)[1]): r["value"] for r in mine}
        width = 0.8 / len(tasks)
        for k, task in enumerate(tasks):
            ys = [100 * vals.get((la, h, task), np.nan) for la, h in heads]
            ax.bar(
                np.arange(len(heads)) + (k - (len(tasks) - 1) / 2) * width, ys, width, label=task
            )
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(
            range(len(heads)), [f"L{la}H{h}" for la, h in heads], rotation=45, fontsize="x-small"
        )
        ax.set_xlabel("ablated head (layer, head)")
        ax.set_ylabel("Δ score when zeroed (pp)")
        ax.set_title(run_name(run, _multi_seed(data)), fontsize="small")
        ax.legend(fontsize="x-small")
    fig.suptitle("Head ablation: score change when one head is zeroed")
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


ANALYSIS_FIGURES: list[tuple[str, str, Builder]] = [
    ("delta_norm_vs_rank", "Update norm vs LoRA rank", fig_norm_vs_rank),
    ("drift_per_layer", "Per-layer drift", fig_drift_heatmaps),
    ("intruders_vs_rank", "Intruder dimensions vs LoRA rank", fig_intruders_vs_rank),
    ("rank_measures", "Stable and effective rank of ΔW", fig_rank_measures),
    ("attention_entropy_change", "Attention entropy change", fig_entropy_change),
    ("attention_js", "Attention change per head", fig_js_heatmaps),
    ("head_ablation", "Head ablation", fig_ablation),
    ("cka_per_layer", "Representation similarity (CKA)", fig_cka),
]


def render_analysis_figures(data: ReportData, out_dir: Path) -> list[FigureOut]:
    return save_figures(data, out_dir, ANALYSIS_FIGURES)


def spectral_summary_table(data: ReportData) -> Table | None:
    """Per run: mean over modules and layers of the spectral metrics."""
    rows = rows_of(data, "spectral", lambda m: not m.startswith("type:"))
    if not rows:
        return None
    eps = sorted(
        {r["metric"] for r in rows if r["metric"].startswith("intruders_")},
        key=lambda m: float(m.split("_", 1)[1]),
    )
    means = {m: per_run(r for r in rows if r["metric"] == m) for m in [*SPECTRAL_SUMMARY, *eps]}
    metrics = [m for m, v in means.items() if v]
    if not metrics:
        return None
    runs = sorted(
        tuned_runs(data, (r["run_id"] for r in rows)),
        key=lambda r: (label_sort_key(method_label(r)), r["train_task"], r["seed"]),
    )
    t = Table(
        ["run", "method", "train task", *metrics],
        [],
        [False] * 3 + [True] * len(metrics),
        "Spectral summary of ΔW per run (mean over modules and layers).",
    )
    for r in runs:
        t.rows.append(
            [
                r["run_id"],
                method_label(r),
                r.get("train_task") or "–",
                *(fmt_sig(means[m].get(r["run_id"])) for m in metrics),
            ]
        )
    return t


def has_analysis(data: ReportData) -> bool:
    return bool(data.analysis)
