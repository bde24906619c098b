"""The report's tables, one builder per table, shared by report.md/.html and the LaTeX file.

Rows are runs or configurations in :class:`MethodKey` order; cells are formatted strings.
This module also keeps importable the names that used to live here before the report was
split (``Table``, ``to_markdown``, ``ReportData``, ...), so older imports keep working.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from rankscope.identity import fmt_lr
from rankscope.report.analysis_rows import per_run, rows_of, tuned_runs
from rankscope.report.data import (
    ReportData,
    Score,
    aggregate,
    base_run,
    failed_runs,
    is_baseline,
    scores,
    sort_runs,
)
from rankscope.report.derived import (
    ParamCount,
    cross_domain,
    param_counts,
    retention,
    tradeoffs,
)
from rankscope.report.fmt import (
    Table,
    fmt_ci_pct,
    fmt_ci_pp,
    fmt_int,
    fmt_num,
    fmt_pct,
    fmt_pp,
    fmt_sig,
    latex_escape,
    short_error,
    to_latex,
    to_markdown,
)
from rankscope.report.keys import MethodKey, Row, method_label
from rankscope.report.selection import (
    group_key,
    impossible,
    lr_rows,
    selected_lrs,
    several_lrs,
    shown,
    shown_agg,
    shown_runs,
    shown_scores,
)
from rankscope.stats import mean_ci

__all__ = [  # the builders, and the names older code imports from here
    "ReportData",
    "Table",
    "cross_domain",
    "cross_domain_table",
    "delta_table",
    "drift_table",
    "failed_table",
    "generative_table",
    "lr_table",
    "latex_escape",
    "method_label",
    "results_table",
    "retention_table",
    "run_summary_table",
    "spectral_summary_table",
    "to_latex",
    "to_markdown",
    "tradeoff_table",
]

SPECTRAL_SUMMARY = ("rel_fro", "stable_rank", "effective_rank", "subspace_sim_left", "sim_left")
RUN_COLUMNS = ("run", "method", "train task", "seed")
COST_FIELDS = (  # column, runs-table field, formatter
    ("trainable params", "trainable_params", fmt_int),
    ("train time (s)", "train_seconds", lambda v: fmt_num(v, 1)),
    ("tokens/s", "tokens_per_second", lambda v: fmt_num(v, 0)),
    ("peak memory (MB)", "peak_memory_mb", lambda v: fmt_num(v, 0)),
    ("final train loss", "final_train_loss", lambda v: fmt_num(v, 4)),
)


def _run_cells(run: Row) -> list[str]:
    seed = run.get("seed")
    cells = [run["run_id"], MethodKey.of(run).label, run.get("train_task") or "–"]
    return cells + ["–" if seed is None else str(seed)]


def _per_task_table(
    data: ReportData, runs: list[Row], cell: Callable[[Score | None], str], caption: str
) -> Table:
    """One row per run, one column per eval task; in-domain cells bold."""
    by = {(s.run_id, s.task): s for s in data.scores}
    tasks = data.eval_tasks
    t = Table.make([*RUN_COLUMNS, *(data.task_header(e) for e in tasks)], 4, caption)
    for i, run in enumerate(runs):
        t.rows.append(_run_cells(run) + [cell(by.get((run["run_id"], e))) for e in tasks])
        t.bold |= {(i, 4 + j) for j, e in enumerate(tasks) if e == run.get("train_task")}
    return t


def _score_cell(s: Score | None) -> str:
    if s is None:
        return "–"
    return fmt_pct(s.value) + ("" if s.stderr is None else f" ± {fmt_pct(s.stderr)}")


SHOWN = " Each configuration at its learning rate selected on validation."
CI = "mean ± 95% CI half-width over seeds (t-interval; one seed: no interval)"


def results_table(data: ReportData) -> Table:
    """Primary metric (%) ± stderr per run (at the selected lr) and eval task."""
    caption = "Primary metric per run and eval task (%, ± standard error); in-domain bold."
    return _per_task_table(data, shown_runs(data), _score_cell, caption + SHOWN)


def delta_table(data: ReportData) -> Table:
    """Change vs base (pp) per tuned run (at the selected lr) and eval task."""
    tuned = [r for r in shown_runs(data) if not is_baseline(r)]
    caption = "Change vs the base model per run (percentage points); in-domain bold."
    cell = lambda s: fmt_pp(s.delta if s else None)  # noqa: E731
    return _per_task_table(data, tuned, cell, caption + SHOWN)


def retention_table(data: ReportData) -> Table:
    """Retention-task score and its change vs base per configuration (mean ± CI)."""
    cols = ["method", "train task", "seeds", "score (%)", "Δ vs base (pp)"]
    t = Table.make(cols, 2, f"Retention on {data.retention_task} ({CI}).{SHOWN}")
    for a in retention(shown_agg(data), data.retention_task):
        row = [a.key.lr_label, a.train_task or "–", str(a.n_seeds), fmt_ci_pct(a.ci)]
        t.rows.append([*row, fmt_ci_pp(a.delta_ci)])
    return t


def cross_domain_table(data: ReportData) -> Table:
    """All cross-domain matrices stacked: rows (method, train task), Δ pp per eval task."""
    tasks, agg = data.eval_tasks, shown_agg(data)
    ci = {(a.key, a.train_task, a.task): a.delta_ci for a in agg}
    seeds = {(a.key, a.train_task): a.n_seeds for a in agg}
    caption = f"Cross-domain change vs base (pp, {CI}); in-domain bold.{SHOWN}"
    heads = [data.task_header(e) for e in tasks]
    t = Table.make(["method", "train task", "seeds", *heads], 3, caption)
    for m in cross_domain(agg, data.train_tasks, tasks):
        for train in m.train_tasks:
            cells = [ci.get((m.key, train, e)) for e in tasks]
            if all(c is None for c in cells):
                continue
            t.bold |= {(len(t.rows), 3 + j) for j, e in enumerate(tasks) if e == train}
            n = str(seeds.get((m.key, train), "–"))
            t.rows.append([m.key.lr_label, train, n, *(fmt_ci_pp(c) for c in cells)])
    return t


def lr_table(data: ReportData) -> Table | None:
    """Per group and lr: validation score (the criterion), in-domain test score (shown, not
    used), and which lr was selected. None when no group has more than one lr."""
    if not several_lrs(data):
        return None
    selected = selected_lrs(data)
    cols = ["method", "train task", "lr", "seeds", "val score (%)", "test in-domain (%)"]
    caption = (
        "Learning rate selection: per configuration and lr, the validation score on the train "
        f"task (the criterion) and the in-domain test score (not used to select); {CI}."
    )
    if impossible(data, selected):
        caption += " Without validation scores an lr cannot be selected: all lrs are shown."
    t = Table.make([*cols, "selected"], 2, caption)
    t.numeric = [*(t.numeric or [])[:-1], False]
    for r in lr_rows(data, selected):
        n = r.val.n if r.val else r.test_in_domain.n if r.test_in_domain else None
        row = [r.key.label, r.train_task or "–", fmt_lr(r.key.lr) if r.key.lr else "–"]
        row += ["–" if n is None else str(n), fmt_ci_pct(r.val), fmt_ci_pct(r.test_in_domain)]
        t.rows.append([*row, "yes" if r.selected else ""])
    return t


def tradeoff_table(data: ReportData) -> Table:
    """Per method: parameters trained and mean in-domain / cross-domain / retention Δ."""
    params: dict[MethodKey, ParamCount] = {}  # a group's size does not depend on its lr
    for p in param_counts(data.runs):
        params.setdefault(group_key(p.key), p)
    cols = ["method", "trainable params", "% of total", "seeds"]
    cols += ["in-domain Δ (pp)", "cross-domain Δ (pp)", "retention Δ (pp)"]
    caption = (
        "Per method: parameters trained and mean change vs base over train tasks (± 95% CI "
        "half-width: the train tasks' seed-level intervals combined in quadrature)." + SHOWN
    )
    t = Table.make(cols, 1, caption)
    for tr in tradeoffs(shown_agg(data), data.retention_task, shown_scores(data)):
        p = params.get(group_key(tr.key))
        size = [fmt_int(p.trainable), fmt_pct(p.fraction, 3)] if p else ["–", "–"]
        hw = tr.half_widths
        deltas = [
            fmt_pp(tr.in_domain, hw.get("in")),
            fmt_pp(tr.cross_domain, hw.get("cross")),
            fmt_pp(tr.retention, hw.get("retention")),
        ]
        t.rows.append([tr.key.lr_label, *size, _seed_range(tr.seeds), *deltas])
    return t


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


def _seed_range(seeds: tuple[int, ...]) -> str:
    if not seeds:
        return "–"
    lo, hi = min(seeds), max(seeds)
    return str(lo) if lo == hi else f"{lo}–{hi}"


def run_summary_table(data: ReportData) -> Table:
    """Every run with its status and the cost of training it."""
    cols = [*RUN_COLUMNS, "status", *(c for c, _, _ in COST_FIELDS)]
    t = Table.make(cols, 5, "Every run: status and cost of training.")
    for r in sort_runs(data.runs):
        t.rows.append(_run_cells(r) + [r["status"], *(f(r.get(k)) for _, k, f in COST_FIELDS)])
    return t


def failed_table(data: ReportData) -> Table:
    """Runs that did not finish, with the last line of their error."""
    t = Table.make(
        [*RUN_COLUMNS, "status", "error"],
        6,
        "Runs that failed or did not finish; their results are left out.",
    )
    t.numeric = None
    for r in failed_runs(data.runs):
        t.rows.append(_run_cells(r) + [r["status"], short_error(r.get("error")) or "–"])
    return t


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
        key=lambda r: (MethodKey.of(r).sort_key, r["train_task"], r["seed"]),
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
                MethodKey.of(r).label,
                r.get("train_task") or "–",
                *(fmt_sig(means[m].get(r["run_id"])) for m in metrics),
            ]
        )
    return t


def report_tables(data: ReportData) -> dict[str, Table | None]:
    """Every table of the report, each built once: the Markdown/HTML blocks and the LaTeX
    file show the same objects. None: no spectral table without analysis rows."""
    return {
        "tradeoffs": tradeoff_table(data),
        "drift": drift_table(data),
        "results": results_table(data),
        "delta": delta_table(data),
        "generative": generative_table(data),
        "retention": retention_table(data),
        "cross-domain": cross_domain_table(data),
        "lr-selection": lr_table(data),
        "cost": run_summary_table(data),
        "spectral": spectral_summary_table(data) if data.analysis else None,
        "failed": failed_table(data),
    }
