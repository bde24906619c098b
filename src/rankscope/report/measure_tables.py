"""The report's tables of measures beside the primary metric: retention beyond letter
accuracy (gold log-probability, KL to the base model) and the generative tasks' two answer
extractions. Split from `tables` to keep each module small; `tables.report_tables` builds them.
"""

from __future__ import annotations

import math

from rankscope.report.data import ReportData, Score, aggregate, base_run, scores
from rankscope.report.fmt import CI, SHOWN, Table, fmt_ci_pct, fmt_ci_pp
from rankscope.report.keys import MethodKey
from rankscope.report.selection import selected_lrs, shown, shown_agg
from rankscope.stats import mean_ci

DRIFT_METRICS = ("gold_logprob", "kl_base")
"""The continuous retention measures: the gold answer letter's log-probability (its change
vs base) and the mean per-token KL(base ‖ tuned) on general text (rankscope.drift)."""

_Conf = tuple[str | None, MethodKey]


def _measure_cell(scores_: list[Score], change: bool, base_se: float | None) -> str:
    """Mean over seeds ± 95% half-width: the seeds' t-interval, or for one seed the items'
    normal interval (1.96 standard errors; a change adds the base's error in quadrature)."""
    values = [s.delta if change else s.value for s in scores_]
    if not values or any(v is None for v in values):
        return "–"
    ci = mean_ci(values)  # type: ignore[arg-type]
    half = ci.half_width
    if half is None and scores_[0].stderr is not None:
        base = (base_se or 0.0) if change else 0.0
        half = 1.96 * math.sqrt(scores_[0].stderr ** 2 + base**2)
    text = f"{ci.est:+.3f}" if change else f"{ci.est:.4f}"
    return text if half is None else f"{text} ± {half:.{3 if change else 4}f}"


def _by_conf(items: list[Score]) -> dict[_Conf, list[Score]]:
    out: dict[_Conf, list[Score]] = {}
    for s in items:
        if not s.key.info.baseline:
            out.setdefault((s.train_task, s.key), []).append(s)
    return out


def drift_table(data: ReportData) -> Table | None:
    """Retention beyond letter accuracy: per shown configuration, its retention accuracy
    change beside the change of the gold letter's log-probability and the KL(base ‖ tuned)
    on general text, which move even where accuracy sits at chance. None without them."""
    ret = data.retention_task
    rows = [r for r in data.metrics if r["task"] == ret]
    selected = selected_lrs(data)
    gold = _by_conf(shown([s for s in scores(data.runs, rows, "gold_logprob")], selected))
    kl = _by_conf(shown([s for s in scores(data.runs, rows, "kl_base")], selected))
    if ret is None or not (gold or kl):
        return None
    base = base_run(data.runs)
    base_se = next(
        (
            r["stderr"]
            for r in rows
            if base and r["run_id"] == base["run_id"] and r["metric"] == "gold_logprob"
        ),
        None,
    )
    acc = {(a.train_task, a.key): a for a in shown_agg(data, selected) if a.task == ret}
    cols = ["method", "train task", "seeds", "accuracy Δ (pp)"]
    cols += ["gold log-prob Δ (nats)", "KL(base ‖ tuned) (nats/token)"]
    caption = (
        f"Retention on {ret} beyond letter accuracy: the change vs base of the gold answer "
        "letter's mean log-probability, and the mean per-token KL divergence of the base "
        "model's next-token distribution from the tuned model's on general text (0 = "
        "unchanged). Both move where accuracy sits at chance. Mean ± 95% CI half-width over "
        "seeds (one seed: over items)." + SHOWN
    )
    t = Table.make(cols, 3, caption)
    for conf in sorted({*gold, *kl}, key=lambda c: (c[1].sort_key, c[0] or "")):
        a = acc.get(conf)
        t.rows.append(
            [
                conf[1].lr_label,
                conf[0] or "–",
                str(len(gold.get(conf) or kl.get(conf) or [])),
                fmt_ci_pp(a.delta_ci) if a else "–",
                _measure_cell(gold.get(conf, []), True, base_se),
                _measure_cell(kl.get(conf, []), False, None),
            ]
        )
    return t


EXTRACTIONS = (("em_strict", "strict"), ("em_flexible", "flexible"))
"""A generative task's two answer extractions, as lm-eval's gsm8k reports them: the number
after '#### ' (strict) and the last number of the answer (flexible)."""


def generative_table(data: ReportData) -> Table | None:
    """Per shown configuration and generative task, exact match under the strict and the
    flexible extraction side by side (%, mean ± CI over seeds). None without such tasks."""
    tasks = [
        t
        for t in data.eval_tasks
        if any(m["task"] == t and m["metric"] == "em_flexible" for m in data.metrics)
    ]
    if not tasks:
        return None
    selected = selected_lrs(data)
    agg = {
        (metric, a.train_task, a.key, a.task): a
        for metric, _ in EXTRACTIONS
        for a in shown(aggregate(scores(data.runs, data.metrics, metric)), selected)
        if a.metric == metric
    }
    cols = ["method", "train task", "seeds"]
    cols += [f"{t} {name} (%)" for t in tasks for _, name in EXTRACTIONS]
    caption = (
        "Generative tasks: exact match of the strict ('#### N') and the flexible (last number) "
        f"answer extraction, {CI}." + SHOWN
    )
    t = Table.make(cols, 3, caption)
    confs = sorted({(k[1], k[2]) for k in agg}, key=lambda c: (c[1].sort_key, c[0] or ""))
    for train, key in confs:
        cells = [agg.get((m, train, key, task)) for task in tasks for m, _ in EXTRACTIONS]
        n = max((a.n_seeds for a in cells if a), default=0)
        row = [key.lr_label, train or "–", str(n)]
        t.rows.append(row + [fmt_ci_pct(a.ci) if a else "–" for a in cells])
    return t
