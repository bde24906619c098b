"""The report's tables, one builder per table, shared by report.md/.html and the LaTeX file.

Rows are runs or configurations in :class:`MethodKey` order; cells are formatted strings.
This module also keeps importable the names that used to live here before the report was
split (``Table``, ``to_markdown``, ``ReportData``, ...), so older imports keep working.
"""

from __future__ import annotations

from collections.abc import Callable

from rankscope.identity import fmt_lr
from rankscope.report.analysis_rows import per_run, rows_of, tuned_runs
from rankscope.report.data import (
    ReportData,
    Score,
    failed_runs,
    is_baseline,
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
    CI,
    SHOWN,
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
from rankscope.report.measure_tables import drift_table, generative_table
from rankscope.report.selection import (
    group_key,
    impossible,
    lr_rows,
    selected_lrs,
    several_lrs,
    shown_agg,
    shown_runs,
    shown_scores,
)

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
