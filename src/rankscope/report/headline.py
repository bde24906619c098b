"""The answer at the top of the report, and what `rankscope recommend` prints: the trade-off
figure (in-domain gain vs retention cost, one point per configuration with its 95% CI cross,
the Pareto front, the recommendation marked), one line per train task naming the
recommendation, and the table of options (:mod:`rankscope.report.decision` computes them).
"""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from rankscope.identity import fmt_lr
from rankscope.report.data import ReportData
from rankscope.report.decision import Decision, Limits, Option, decisions
from rankscope.report.fmt import Table, fmt_ci_pct, fmt_int
from rankscope.report.plot import method_colors, new_figure
from rankscope.stats import Comparison

HEADLINE_FIGURE = "tradeoff"
"""The file name (figures/tradeoff.png) of the figure that heads the report."""

HOW = (
    "Gain is the validation score on the train task minus the base model's (paired on the "
    "same items); retention cost is the base model's retention score minus the "
    "configuration's, on a fixed half of the retention items (the retention task has no "
    "validation split; the other half confirms the chosen configuration's cost). Both are "
    "means over seeds with 95% intervals (paired t over seeds and items). The recommendation "
    "is the best validation score among the admissible configurations; those whose paired "
    "validation difference from it is not significant (Holm-corrected) are equivalent, and "
    "the cheapest equivalent is the one of them with the lowest retention cost, confirmed on "
    "the other half. A retention limit applies to the mean cost (its interval is beside "
    "it), and a configuration without shared items to measure it on is never admissible."
)


def option_name(o: Option) -> str:
    if o.baseline:
        return "base model (no fine-tuning)"
    return o.key.prose + ("" if o.lr is None else f", lr {fmt_lr(o.lr)}")


def _short(o: Option) -> str:
    if o.baseline:
        return "base"
    if o.key.info.ranked:
        return o.key.label.replace(o.key.method + " ", "")
    return o.key.prose


def confirmed_line(d: Decision) -> str | None:
    """The recommendation measured on items it was not chosen on; None when there are none
    (the base model recommended, or no base model)."""
    c = d.confirmed
    if d.best is None or c is None or (c.in_domain is None and c.retention is None):
        return None
    parts = []
    if c.in_domain is not None:
        parts.append(f"in-domain test change {pp_ci(c.in_domain)}")
    if c.retention is not None:
        parts.append(f"retention cost on the confirmation half {pp_ci(c.retention)}")
    return f"**{d.train_task}**, {option_name(d.best)} on items it was not chosen on: " + (
        "; ".join(parts) + "."
    )


def decision_line(d: Decision) -> str:
    """One sentence per train task: the recommendation, its CI, the equivalent ones."""
    head = f"**{d.train_task}**: "
    if d.best is None:
        return head + "no configuration is within the limits."
    b = d.best
    text = head + f"**{option_name(b)}**, validation {fmt_ci_pct(b.val.val)} % ({b.val.val.n} "
    text += "seeds" if b.val.val.n != 1 else "seed"
    text += ")"
    if b.gain is not None:
        text += f", gain {pp_ci(b.gain)}"
    if b.cost is not None:
        text += f", retention cost {pp_ci(b.cost)}"
    text += "."
    if d.equivalent:
        text += " Equivalent: " + "; ".join(option_name(o) for o in d.equivalent) + "."
        if d.cheapest is not None and d.cheapest is not b:
            text += f" Cheapest equivalent: **{option_name(d.cheapest)}** ({_cheapest(d)})."
        if d.worse:
            text += " Significantly worse: " + "; ".join(option_name(o) for o in d.worse) + "."
    elif d.worse:
        text += " Every other admissible configuration is significantly worse on validation."
    return text


def _cheapest(d: Decision) -> str:
    """The cheapest equivalent's retention cost where it was chosen (selection half) and on
    the items it was not chosen on (confirmation half), and its size."""
    o, c = d.cheapest, d.cheapest_confirmed
    assert o is not None
    text = f"retention cost {o.cost_pp:+.1f} pp on the selection half"
    if c is not None and c.retention is not None:
        text += f", {pp_ci(c.retention)} on the confirmation half"
    return text + f"; {fmt_int(o.params)} trainable parameters"


def excluded_line(d: Decision) -> str | None:
    """The configurations the limits leave out, and why; None when none."""
    excluded = [o for o in d.options if o.excluded]
    if not excluded:
        return None
    names = "; ".join(f"{option_name(o)} ({o.excluded})" for o in excluded)
    return f"**{d.train_task}**, outside the limits: {names}."


def _verdict(d: Decision, o: Option) -> str:
    if o.excluded:
        return "outside limits"
    if o is d.best:
        return "recommended"
    if o in d.equivalent:
        return "cheapest equivalent" if o is d.cheapest else "equivalent"
    if o in d.worse:
        return "worse"
    return "–"


def options_table(d: Decision) -> Table:
    cols = [
        "configuration",
        "verdict",
        "front",
        "seeds",
        "validation %",
        "gain pp (val)",
        "retention cost pp",
        "trainable params",
    ]
    caption = (
        f"Trained on {d.train_task}: every configuration at its validation-selected lr. "
        "Gain and cost: paired differences with 95% intervals (p not corrected); front: "
        "not beaten on both gain and cost by another configuration."
    )
    t = Table.make(cols, 3, caption)
    for o in d.options:
        if o is d.best:
            t.bold.add((len(t.rows), 0))
        t.rows.append(
            [
                option_name(o),
                _verdict(d, o),
                "yes" if o.on_front else "",
                str(o.val.val.n),
                fmt_ci_pct(o.val.val),
                _nothing(o) if o.gain is None else pp_ci(o.gain, ""),
                _nothing(o) if o.cost is None else pp_ci(o.cost, ""),
                fmt_int(o.params),
            ]
        )
    return t


def _nothing(o: Option) -> str:
    """A missing difference: 0 for the base model itself, not measured for the others."""
    return "0" if o.baseline else "–"


def pp_ci(c: Comparison, unit: str = " pp") -> str:
    """'+4.1 pp [1.8, 6.3]': a paired difference with its 95% interval, no p (the headline
    states intervals; the tested claims with corrected p are in the summary)."""
    return f"{100 * c.diff:+.1f}{unit} [{100 * c.lo:.1f}, {100 * c.hi:.1f}]"


# ------------------------------------------------------------------ the figure
def fig_tradeoff(data: ReportData, limits: Limits = Limits()) -> Figure | None:
    """In-domain gain (validation, pp) against retention cost (pp, selection half of the
    retention items) per configuration at its selected lr: means over seeds with 95% paired
    intervals as crosses, the Pareto front as a line, the recommendation as a
    large ring and the cheapest equivalent as a square; configurations outside the limits
    are grey."""
    ds = [d for d in decisions(data, limits) if len(d.options) > 1]
    if not ds:
        return None
    fig, axes = new_figure(len(ds), w=5.0, h=3.2)
    colors = method_colors(o.key for d in ds for o in d.options)
    for ax, d in zip(axes, ds, strict=True):
        for o in (o for o in d.options if not o.unmeasured):
            _draw_option(ax, o, "0.7" if o.excluded else colors[o.key])
        _draw_decision(ax, d, limits)
        ax.set_title(f"trained on {d.train_task}")
        ax.set_xlabel(f"retention cost on {d.retention_task or '–'} (pp, lower is better)")
        ax.set_ylabel("in-domain gain on validation (pp)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small", loc="best")
    fig.suptitle("What each configuration gains and what it forgets")
    return fig


def _draw_option(ax: Axes, o: Option, color: object) -> None:
    """One configuration: its mean gain and cost with the 95% intervals as a cross."""
    x, y = o.cost_pp, o.gain_pp
    err = {}
    if o.cost is not None:
        err["xerr"] = [[x - 100 * o.cost.lo], [100 * o.cost.hi - x]]
    if o.gain is not None:
        err["yerr"] = [[y - 100 * o.gain.lo], [100 * o.gain.hi - y]]
    ax.errorbar([x], [y], fmt="o", color=color, ms=6, capsize=3, lw=1.0, **err)
    ax.annotate(_short(o), (x, y), xytext=(5, 5), textcoords="offset points", fontsize=8)


def _draw_decision(ax: Axes, d: Decision, limits: Limits) -> None:
    """The Pareto front, the recommendation, the cheapest equivalent and the limit."""
    front = sorted((o for o in d.options if o.on_front), key=lambda o: o.cost_pp)
    xs, ys = [o.cost_pp for o in front], [o.gain_pp for o in front]
    ax.plot(xs, ys, color="0.4", lw=1, zorder=0, label="Pareto front")
    ring = {"ls": "none", "mfc": "none", "mew": 2}
    if d.best is not None:
        ax.plot([d.best.cost_pp], [d.best.gain_pp], marker="o", ms=16, mec="crimson",
                label="recommended", **ring)  # fmt: skip
    if d.cheapest is not None and d.cheapest is not d.best:
        ax.plot([d.cheapest.cost_pp], [d.cheapest.gain_pp], marker="s", ms=13,
                mec="darkorange", label="cheapest equivalent", **ring)  # fmt: skip
    if limits.max_retention_loss is not None:
        ax.axvline(
            limits.max_retention_loss, color="crimson", ls=":", lw=1, label="retention limit"
        )
    ax.axhline(0, color="0.85", lw=0.8, zorder=-1)
    ax.axvline(0, color="0.85", lw=0.8, zorder=-1)
