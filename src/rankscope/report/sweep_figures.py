"""Figures of the sweep's tuning axes: score against learning rate and against LoRA α.

Both exist only when the sweep varies the axis (some configuration at more than one lr, or
some (method, rank, variant) at more than one α). Every point is a mean over seeds with its
95% t-interval (an error bar, none for one seed).

* Score vs learning rate plots the *validation* score on the train task, the number the lr
  is selected on (:mod:`rankscope.report.selection`); the selected lr is starred. Test
  scores are never drawn here, so the figure shows exactly what the choice saw.
* Score vs α plots the in-domain *test* score and the retention change vs base, one line
  per rank, each point at its selected lr: whether the best α depends on r.

The numbers each figure draws come from :func:`lr_series` and :func:`alpha_series` (lists of
:class:`Series`), so they can be checked without reading an image. :func:`alpha_rules`
names the α series ('α=2r', 'α=16') that the rank figures draw as separate lines.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from rankscope.identity import fmt_lr
from rankscope.report.data import ReportData, done_runs
from rankscope.report.keys import MethodKey
from rankscope.report.plot import (
    Builder,
    Point,
    Series,
    draw_series,
    method_colors,
    new_figure,
    seeds_note,
    series,
    shared_legend,
)
from rankscope.report.selection import (
    Group,
    group_of,
    select,
    selected_lrs,
    several_lrs,
    val_in_domain,
)

Rule = tuple[str, float]
"""An α rule: ('r', k) for α = k·r, ('n', a) for a fixed α = a."""
DEFAULT_RULE: Rule = ("r", 2.0)
LINE_STYLES = ("-", "--", ":", "-.")
SELECTED = "★ lr selected on validation"


# ------------------------------------------------------------------ α rules
def _parse_rule(rule: object) -> Rule | None:
    text = str(rule).strip().replace(" ", "")
    try:
        if text.endswith("r"):
            k = text[:-1]
            return ("r", float(k) if k not in ("", "*") else 1.0)
        return ("n", float(text))
    except ValueError:
        return None


def config_rules(data: ReportData, method: str) -> list[Rule]:
    """The α rules of `methods.<method>.alpha` in the stored config ([] when unknown)."""
    try:
        section = json.loads(data.meta.get("config_json") or "{}")["methods"][method]
    except (ValueError, KeyError, TypeError):
        return []
    raw = section.get("alpha") if isinstance(section, dict) else None
    rules = [_parse_rule(r) for r in (raw if isinstance(raw, list) else [raw])]
    return [r for r in rules if r is not None] if raw is not None else []


def _matches(rule: Rule, rank: int, alpha: float) -> bool:
    want = rule[1] * rank if rule[0] == "r" else rule[1]
    return abs(want - alpha) <= 1e-9 * max(1.0, abs(alpha))


def _infer_rules(pairs: set[tuple[int, float]]) -> list[Rule]:
    """Rules covering every (rank, α), greedily: the rule covering most uncovered points
    first; ties prefer α = 2r, then any k·r, then fixed values, then smaller numbers."""
    cands: set[Rule] = set()
    for r, a in pairs:
        cands |= {("r", round(a / r, 9)), ("n", float(a))}
    left, chosen = set(pairs), []
    while left:
        best = min(
            sorted(cands),
            key=lambda c: (-sum(_matches(c, r, a) for r, a in left), c != DEFAULT_RULE, c),
        )
        chosen.append(best)
        left = {(r, a) for r, a in left if not _matches(best, r, a)}
    return chosen


def rule_name(rule: Rule) -> str:
    if rule[0] == "r":
        return "α=r" if rule[1] == 1 else f"α={rule[1]:g}r"
    return f"α={rule[1]:g}"


def rule_order(name: str) -> tuple[bool, str]:
    """Lines of the default α = 2r (or of no named rule) first, then by name."""
    return (name not in ("", rule_name(DEFAULT_RULE)), name)


def alpha_rules(
    data: ReportData, method: str, pairs: Iterable[tuple[int, float | None]]
) -> dict[tuple[int, float | None], str]:
    """(rank, α) -> the name of its α series ('α=2r', 'α=16'); '' when every point follows
    the default α = 2r (or has no α). The rules are the config's `methods.<method>.alpha`
    when they cover every point, else inferred from the points themselves."""
    pairs = set(pairs)
    known = {(r, float(a)) for r, a in pairs if a is not None and r}
    rules = config_rules(data, method)
    if not all(any(_matches(x, r, a) for x in rules) for r, a in known):
        rules = _infer_rules(known)
    names = {
        (r, a): ""
        if a is None or not r
        else rule_name(next(x for x in rules if _matches(x, r, float(a))))
        for r, a in pairs
    }
    if set(names.values()) <= {"", rule_name(DEFAULT_RULE)}:
        return {p: "" for p in names}
    return names


def _line_style(data: ReportData, keys: Iterable[MethodKey]) -> dict[MethodKey, dict]:
    """Colour per (method, rank, variant) and line style per α series, for keys that may
    carry an α and an lr."""
    keys = sorted(set(keys), key=_order)
    colors = method_colors(MethodKey(k.method, k.rank, k.variant) for k in keys)
    rules: dict[MethodKey, str] = {}
    for method in sorted({k.method for k in keys if k.info.ranked}):
        ranked = [k for k in keys if k.method == method and k.info.ranked]
        names = alpha_rules(data, method, {(k.rank or 0, k.alpha) for k in ranked})
        rules |= {k: names.get((k.rank or 0, k.alpha), "") for k in ranked}
    order = sorted(set(rules.values()), key=rule_order)
    return {
        k: {
            "color": colors[MethodKey(k.method, k.rank, k.variant)],
            "ls": LINE_STYLES[order.index(rules[k]) % 4] if k in rules else "--",
        }
        for k in keys
    }


def _order(key: MethodKey) -> tuple:
    return (key.sort_key, key.alpha or 0.0, key.lr or 0.0)


def _finish(fig: Figure, axes: list[Axes], title: str, ns: Iterable[int]) -> Figure:
    shared_legend(fig, axes)
    fig.suptitle(f"{title}\n{seeds_note(ns)}")
    return fig


# ------------------------------------------------------------------ score vs lr
def lr_series(data: ReportData) -> dict[str, list[Series]]:
    """Per train task: one line per group (method, rank, variant, α) over its lrs, the mean
    *validation* score on the train task with its 95% CI; the selected lr is marked."""
    selected = selected_lrs(data)
    points: dict[Group, list[Point]] = defaultdict(list)
    for a in val_in_domain(data):
        if a.key.lr is not None and a.ci is not None:
            points[group_of(a)].append(Point.of(a.key.lr, a.ci))
    out: dict[str, list[Series]] = {}
    for (train, gkey), pts in sorted(points.items(), key=lambda kv: _order(kv[0][1])):
        chosen = selected.get((train, gkey))
        line = series(gkey.label, pts, () if chosen is None else (chosen,), key=gkey)
        out.setdefault(train or "", []).append(line)
    order = {t: i for i, t in enumerate(data.train_tasks)}
    return dict(sorted(out.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def fig_score_vs_lr(data: ReportData) -> Figure | None:
    """Validation score on the train task against learning rate (log axis), one panel per
    train task and one line per configuration (method, rank, variant, α): mean over seeds
    with 95% CI error bars (none for one seed). The starred lr is the one selected on this
    validation split (best mean, ties to the smaller lr); test scores play no part in it."""
    lines = lr_series(data) if several_lrs(data) else {}
    if not lines:
        return None
    fig, axes = new_figure(len(lines), ncols=2, w=5.5, h=4.0)
    styles = _line_style(data, (s.key for ls in lines.values() for s in ls))
    for ax, (train, train_lines) in zip(axes, lines.items(), strict=True):
        for k, line in enumerate(train_lines):
            draw_series(ax, line, marked_label=SELECTED, marker="os^D"[k % 4], **styles[line.key])
        lrs = sorted({x for line in train_lines for x in line.xs})
        ax.set_xscale("log")
        ax.set_xticks(lrs, [fmt_lr(x) for x in lrs])
        ax.minorticks_off()
        ax.set_xlabel("learning rate (log scale)")
        metric = next((a.metric for a in data.val_agg if a.task == train), "score")
        ax.set_ylabel(f"validation {metric} (%)")
        ax.set_title(f"trained on {train}: validation")
        ax.grid(True, alpha=0.3)
    ns = [p.n for ls in lines.values() for s in ls for p in s.points]
    return _finish(
        fig, axes, "Validation score vs learning rate, ★: the lr selected on validation", ns
    )


# ------------------------------------------------------------------ score vs α
def several_alphas(data: ReportData) -> bool:
    """Whether some (method, rank, variant) was trained at more than one α."""
    alphas: dict[tuple, set] = defaultdict(set)
    for run in done_runs(data.runs):
        key = MethodKey.of(run)
        if key.info.ranked:
            alphas[(key.method, key.rank, key.variant)].add(key.alpha)
    return any(len(v) > 1 for v in alphas.values())


def alpha_panels(data: ReportData) -> list[tuple[str, str]]:
    """(train task, 'in-domain' | 'retention') of every panel of the α figure, in order."""
    kinds = ["in-domain"] + (["retention"] if data.retention_task else [])
    return [(t, k) for t in data.train_tasks for k in kinds]


def alpha_series(data: ReportData) -> dict[tuple[str, str], list[Series]]:
    """Per (train task, 'in-domain' | 'retention'): one line per ranked (method, variant,
    rank) over α, each point the test aggregate at its group's selected lr: the in-domain
    score, or the retention task's change vs base, mean over seeds with its 95% CI. Groups
    whose lr could not be selected get one line per lr."""
    selected = selected_lrs(data)
    points: dict[tuple[str, str, MethodKey], list[Point]] = defaultdict(list)
    for a in select(data.agg, selected):
        if not a.key.info.ranked or a.key.alpha is None or a.train_task is None:
            continue
        lr = a.key.lr if selected.get(group_of(a)) is None else None
        line = MethodKey(a.method, a.rank, a.variant, None, lr, a.key.replay)
        if a.task == a.train_task and a.ci is not None:
            points[(a.train_task, "in-domain", line)].append(Point.of(a.key.alpha, a.ci))
        elif a.task == data.retention_task and a.delta_ci is not None:
            points[(a.train_task, "retention", line)].append(Point.of(a.key.alpha, a.delta_ci))
    out: dict[tuple[str, str], list[Series]] = {}
    for panel in alpha_panels(data):
        keys = sorted((k for t, kind, k in points if (t, kind) == panel), key=_order)
        if keys:
            out[panel] = [series(k.lr_label, points[(*panel, k)], key=k) for k in keys]
    return out


def fig_score_vs_alpha(data: ReportData) -> Figure | None:
    """In-domain test score (left) and the retention task's change vs base (right) against
    LoRA α (log2 axis), one row per train task and one line per rank: does the best α depend
    on r? Every point is at the lr selected on validation; mean over seeds with 95% CI error
    bars (none for one seed)."""
    lines = alpha_series(data) if several_alphas(data) else {}
    if not lines:
        return None
    fig, axes = new_figure(len(lines), ncols=2 if data.retention_task else 3)
    styles = _line_style(data, (s.key for ls in lines.values() for s in ls))
    for ax, ((train, kind), panel) in zip(axes, lines.items(), strict=True):
        for k, line in enumerate(panel):
            draw_series(ax, line, marker="os^D"[k % 4], color=styles[line.key]["color"])
        alphas = sorted({x for line in panel for x in line.xs})
        ax.set_xscale("log", base=2)
        ax.set_xticks(alphas, [f"{x:g}" for x in alphas])
        ax.minorticks_off()
        ax.set_xlabel("LoRA α (log2 scale)")
        ax.grid(True, alpha=0.3)
        if kind == "retention":
            ax.axhline(0, color="black", lw=0.8)
            ax.set_ylabel(f"Δ {data.retention_task} vs base (pp)")
            ax.set_title(f"trained on {train}: retention")
        else:
            metric = next((a.metric for a in data.agg if a.task == train), "score")
            ax.set_ylabel(f"test {metric} on {train} (%)")
            ax.set_title(f"trained on {train}: in-domain")
    ns = [p.n for ls in lines.values() for s in ls for p in s.points]
    return _finish(fig, axes, "Score vs LoRA α at the selected lr", ns)


SWEEP_FIGURES: list[tuple[str, str, Builder]] = [
    ("score_vs_lr", "Validation score vs learning rate", fig_score_vs_lr),
    ("score_vs_alpha", "Score vs LoRA α", fig_score_vs_alpha),
]
