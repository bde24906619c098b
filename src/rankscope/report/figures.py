"""The report's result figures: scores, retention and parameters against rank, cross-domain
heatmaps and loss curves (and, through :mod:`.sweep_figures`, score against lr and α).

Each ``fig_*`` function takes :class:`ReportData` and returns a ``Figure`` or None when the
sweep has nothing to show for it; :func:`render_figures` saves the ones that exist as PNG.
Ranked methods are drawn against the rank axis, trained unranked ones as dashed reference
lines; which is which comes from :class:`MethodKey`, not from the method's name.

Every score is a *test* aggregate (``data.agg``) of a configuration at the lr selected on
validation (:mod:`.selection`), drawn as its mean over seeds with the 95% t-interval: error
bars on lines, a shaded band around reference lines, ± in heatmap cells; nothing where a
configuration has a single seed. The drawn numbers come from :func:`rank_series` and
:func:`reference_lines`, so they can be checked without an image.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from rankscope.identity import fmt_lr
from rankscope.report.data import AggScore, ReportData, is_baseline
from rankscope.report.derived import cross_domain, param_counts
from rankscope.report.headline import HEADLINE_FIGURE, fig_tradeoff
from rankscope.report.keys import MethodKey, Row
from rankscope.report.plot import (
    Builder,
    FigureOut,
    Point,
    Series,
    color_map,
    draw_reference,
    draw_series,
    method_colors,
    new_figure,
    rank_axis,
    save_figures,
    seeds_note,
    series,
    shared_legend,
)
from rankscope.report.replay import REPLAY_FIGURES
from rankscope.report.selection import Group, group_key, selected_lrs, shown
from rankscope.report.sweep_figures import SWEEP_FIGURES, alpha_rules, rule_order
from rankscope.stats import Interval


def shown_agg(data: ReportData) -> list[AggScore]:
    """The test aggregates at their group's selected lr (every lr where selection was
    impossible), keyed without the lr where it was selected."""
    return shown(data.agg, selected_lrs(data))


def _ci(a: AggScore, delta: bool) -> Interval | None:
    return a.delta_ci if delta else a.ci


def _line_label(train: str, variant: str, rule: str, lr: float | None, replay: float) -> str:
    out = train + (f" ({variant})" if variant else "") + (f" {rule}" if rule else "")
    out += "" if lr is None else f" lr={fmt_lr(lr)}"
    return out + MethodKey("", replay=replay).replay_label


def rank_series(data: ReportData, task: str, train: str, delta: bool = False) -> list[Series]:
    """One (train task, eval task)'s ranked-method lines against rank: one line per variant,
    α series ('α=16' when α is a sweep axis) and, where it could not be selected, lr. Each
    point is the mean over seeds (of the score, or of its change vs base when `delta`) with
    its 95% interval."""
    aggs = [
        a
        for a in shown_agg(data)
        if a.key.info.ranked and a.task == task and a.train_task == train and a.rank
    ]
    rules: dict[tuple, str] = {}
    for method in sorted({a.method for a in aggs}):
        pairs = {(a.rank, a.key.alpha) for a in aggs if a.method == method}
        rules |= {(method, *p): n for p, n in alpha_rules(data, method, pairs).items()}
    lines: dict[tuple, list[Point]] = defaultdict(list)
    for a in aggs:
        ci = _ci(a, delta)
        if ci is not None:
            rule = rules[(a.method, a.rank, a.key.alpha)]
            line = (a.key.info.order, a.variant, rule, a.key.lr, a.key.replay)
            lines[line].append(Point.of(a.rank, ci))
    order = sorted(lines, key=lambda k: (k[:2], rule_order(k[2]), k[3] or 0.0, k[4]))
    return [series(_line_label(train, *k[1:]), lines[k], key=k[1:]) for k in order]


def reference_lines(
    data: ReportData, task: str, train: str, delta: bool = False
) -> list[tuple[str, Interval]]:
    """The reference methods' (full SFT's) aggregates on one (train task, eval task), with
    their legend labels: one per reference method (per lr where it could not be selected)."""
    out = []
    for a in shown_agg(data):
        ci = _ci(a, delta)
        if a.key.info.reference and a.task == task and a.train_task == train and ci is not None:
            name = f"{train}: {a.key.info.prose or a.method}" + _lr_suffix(a.key)
            out.append((name + a.key.replay_label, ci))
    return out


def _alpha_lr_order(key: MethodKey) -> tuple:
    """Within one rank: the default α = 2r first, then by α, then by lr."""
    default = key.alpha is None or key.rank is None or key.alpha == 2.0 * key.rank
    return (not default, key.alpha or 0.0, key.lr or 0.0)


def _lr_suffix(key: MethodKey) -> str:
    return "" if key.lr is None else f" lr={fmt_lr(key.lr)}"


def ranks_of(data: ReportData) -> list[int]:
    """The ranks of the sweep's ranked runs (the x ticks of every rank figure)."""
    return sorted({k.rank for k in map(MethodKey.of, data.runs) if k.info.ranked and k.rank})


def _plot_rank_lines(ax: Axes, data: ReportData, task: str, delta: bool = False) -> list[int]:
    """Ranked-method lines per train task (colour), variant (marker) and α series (line
    style) with 95% CI error bars, and the references (full SFT) as dashed lines in a CI
    band, as % (or pp when delta). Returns the seed counts drawn."""
    colors = color_map(data.train_tasks)
    ns: list[int] = []
    for train in data.train_tasks:
        lines = rank_series(data, task, train, delta)
        rules = sorted({line.key[1] for line in lines}, key=rule_order)
        for k, line in enumerate(lines):
            ls = ("-", "-.", ":", (0, (5, 1)))[rules.index(line.key[1]) % 4]
            draw_series(ax, line, color=colors[train], marker="os^D"[k % 4], ls=ls)
            ns += [p.n for p in line.points]
        for label, ci in reference_lines(data, task, train, delta):
            draw_reference(ax, ci, label, color=colors[train], ls="--", lw=1.2)
            ns.append(ci.n)
    return ns


# ------------------------------------------------------------------ result figures
def fig_accuracy_vs_rank(data: ReportData) -> Figure | None:
    """Primary test metric (%) per eval task against LoRA rank (log2 axis), one line per
    train task: mean over seeds at the lr selected on validation, error bars the 95% CI over
    seeds (none for one seed); dashed lines are full SFT on the same train task (shaded: its
    95% CI), the black dotted line is the base model, the grey dash-dotted one chance (MCQ
    tasks)."""
    ranks = ranks_of(data)
    if not ranks or not data.agg:
        return None
    tasks = [t for t in data.eval_tasks if any(a.task == t for a in data.agg)]
    fig, axes = new_figure(len(tasks))
    base = {a.task: a.mean for a in data.agg if a.key.info.baseline}
    ns: list[int] = []
    for ax, task in zip(axes, tasks, strict=True):
        ns += _plot_rank_lines(ax, data, task)
        if task in base:
            ax.axhline(100 * base[task], color="black", ls=":", lw=1.5, label="base model")
        if task in data.chance:
            ax.axhline(100 * data.chance[task], color="grey", ls="-.", lw=1.0, label="chance")
        rank_axis(ax, ranks)
        metric = next(a.metric for a in data.agg if a.task == task)
        ax.set_ylabel(f"test {metric} (%)")
        ax.set_title(data.task_header(task))
    shared_legend(fig, axes)
    fig.suptitle(
        "Test score vs LoRA rank (lines: LoRA; dashed: full SFT; dotted: base; dash-dot: "
        f"chance)\n{seeds_note(ns)}, at the lr selected on validation"
    )
    return fig


def fig_retention_vs_rank(data: ReportData) -> Figure | None:
    """Change of the retention-task test score vs the base model (percentage points) against
    LoRA rank, mean over seeds at the lr selected on validation with 95% CI error bars (none
    for one seed); dashed lines are full SFT (shaded: its 95% CI). Below zero means
    knowledge was forgotten."""
    ret, ranks = data.retention_task, ranks_of(data)
    if not ret or not ranks or not any(a.task == ret and not a.key.info.baseline for a in data.agg):
        return None
    fig, (ax,) = new_figure(1, w=6.5, h=4.2)
    ns = _plot_rank_lines(ax, data, ret, delta=True)
    ax.axhline(0, color="black", lw=0.8, label="base model (0 pp)")
    rank_axis(ax, ranks)
    ax.set_ylabel(f"Δ {ret} vs base (pp)")
    ax.set_title(f"Retention change vs LoRA rank on {ret}\n({seeds_note(ns)})")
    ax.legend(fontsize="small")
    return fig


def fig_cross_domain(data: ReportData) -> Figure | None:
    """Test Δ vs base (pp) for every train task (rows) and eval task (columns), one panel per
    method at the lr selected on validation: mean over seeds, ± the 95% CI half-width where
    there are several seeds; blue is better than base, red worse; outlined cells are
    in-domain."""
    agg = shown_agg(data)
    mats = cross_domain(agg, data.train_tasks, data.eval_tasks)
    mats = [m for m in mats if any(v is not None for row in m.values for v in row)]
    if not mats:
        return None
    mats.sort(key=lambda m: (m.key.sort_key, *_alpha_lr_order(m.key)))
    vals = np.array(
        [[[np.nan if v is None else 100 * v for v in row] for row in m.values] for m in mats],
        dtype=float,
    )
    half = {
        (a.key, a.train_task, a.task): a.delta_ci.half_width
        for a in agg
        if a.delta_ci is not None and a.delta_ci.half_width is not None
    }
    vmax = max(1.0, float(np.nanmax(np.abs(vals))) if np.isfinite(vals).any() else 1.0)
    ncols = 2 if len(mats) == 4 else min(3, len(mats))
    n_tr, n_ev = len(data.train_tasks), len(data.eval_tasks)
    fig, axes = new_figure(len(mats), ncols, w=1.2 + 0.9 * n_ev, h=1.4 + 0.6 * n_tr)
    im = None
    for ax, m, v in zip(axes, mats, vals, strict=True):
        im = ax.imshow(np.ma.masked_invalid(v), cmap="RdBu", vmin=-vmax, vmax=vmax, aspect="auto")
        hw = [[half.get((m.key, t, e)) for e in m.eval_tasks] for t in m.train_tasks]
        _annotate_heatmap(ax, v, vmax, m.train_tasks, m.eval_tasks, hw)
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
        ax.set_title(m.key.lr_label)
    fig.colorbar(im, ax=axes, label="Δ vs base (pp)", shrink=0.8)
    fig.legend(
        [Patch(fill=False, ec="black", lw=2)],
        ["in-domain (eval = train task)"],
        loc="outside lower center",
        fontsize="small",
    )
    ns = [a.n_seeds for a in agg if not a.key.info.baseline]
    fig.suptitle(f"Cross-domain test change vs base (pp), per method ({seeds_note(ns)})")
    return fig


def _annotate_heatmap(
    ax: Axes,
    v: np.ndarray,
    vmax: float,
    rows: Sequence[str],
    cols: Sequence[str],
    half_widths: Sequence[Sequence[float | None]],
) -> None:
    for i, train in enumerate(rows):
        for j, task in enumerate(cols):
            if np.isfinite(v[i, j]):
                hw = half_widths[i][j]
                text = f"{v[i, j]:+.1f}" + ("" if hw is None else f"\n±{100 * hw:.1f}")
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=8 if hw is None else 7,
                    color="white" if abs(v[i, j]) > 0.6 * vmax else "black",
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
    lines: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
    for p in ranked:  # α and lr do not change the count: one point per rank
        lines[(p.key.info.prose or p.key.method, p.key.variant)].setdefault(p.rank, p.trainable)
    for k, ((name, variant), pts) in enumerate(sorted(lines.items())):
        ax.plot(
            sorted(pts),
            [pts[r] for r in sorted(pts)],
            marker="os^D"[k % 4],
            label=f"{name}{f' ({variant})' if variant else ''}",
        )
    refs = {p.key.method: p for p in counts if p.key.info.reference}
    for p in refs.values():
        ax.axhline(p.trainable, color="black", ls="--", label=f"{p.key.info.prose or p.method}")
    total = next((p.total for p in counts if p.total), None)
    if total:
        ax.axhline(total, color="grey", ls=":", label="total model parameters")
    rank_axis(ax, [p.rank for p in ranked])
    ax.set_yscale("log")
    ax.set_ylabel("trainable parameters (log scale)")
    ax.set_title("Trainable parameters vs LoRA rank")
    ax.legend(fontsize="small")
    return fig


def run_shown(run: Row, selected: dict[Group, float | None]) -> bool:
    """Whether a run is at its group's selected lr (or selection was impossible)."""
    key = MethodKey.of(run)
    chosen = selected.get((run.get("train_task"), group_key(key)))
    return key.info.baseline or chosen is None or key.lr == chosen


def fig_loss_curves(data: ReportData) -> Figure | None:
    """Training loss per optimizer step of every run at the lr selected on validation, one
    panel per train task; each seed is its own curve (the first solid, the others dashed)."""
    selected = selected_lrs(data)
    runs = {r["run_id"]: r for r in data.runs if not is_baseline(r) and run_shown(r, selected)}
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in data.train_log:
        if row["run_id"] in runs and row.get("loss") is not None:
            curves[row["run_id"]].append((row["step"], row["loss"]))
    tasks = [t for t in data.train_tasks if any(runs[r]["train_task"] == t for r in curves)]
    if not tasks:
        return None
    fig, axes = new_figure(len(tasks), w=5.0)
    keys = {rid: MethodKey.of(r) for rid, r in runs.items()}
    colors = method_colors(keys.values())
    first = min((r.get("seed") or 0 for r in runs.values()), default=0)
    for ax, task in zip(axes, tasks, strict=True):
        labelled: set[MethodKey] = set()
        order = sorted(curves, key=lambda r: (keys[r].sort_key, str(keys[r]), r))
        for rid in (r for r in order if runs[r]["train_task"] == task):
            pts = sorted(curves[rid])
            key = keys[rid]
            ax.plot(
                [s for s, _ in pts],
                [v for _, v in pts],
                color=colors[key],
                lw=1.2,
                ls="-" if (runs[rid].get("seed") or 0) == first else "--",
                label="_nolegend_" if key in labelled else key.lr_label,
            )
            labelled.add(key)
        ax.set_title(f"trained on {task}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("train loss (nats/token)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.suptitle("Training loss per run\n(at the selected lr; dashed: further seeds)")
    return fig


RESULT_FIGURES: list[tuple[str, str, Builder]] = [
    (HEADLINE_FIGURE, "Gain vs retention cost", fig_tradeoff),
    ("accuracy_vs_rank", "Test score vs LoRA rank", fig_accuracy_vs_rank),
    ("retention_vs_rank", "Retention change vs LoRA rank", fig_retention_vs_rank),
    ("cross_domain", "Cross-domain change per method", fig_cross_domain),
    ("params_vs_rank", "Trainable parameters vs LoRA rank", fig_params_vs_rank),
    ("loss_curves", "Training loss", fig_loss_curves),
    *SWEEP_FIGURES,
    *REPLAY_FIGURES,
]


def render_figures(data: ReportData, out_dir: Path) -> list[FigureOut]:
    """The result figures (accuracy, retention, cross-domain, parameters, loss) and the
    sweep-axis ones (score vs lr, score vs α) that the sweep has data for."""
    return save_figures(data, out_dir, RESULT_FIGURES)
