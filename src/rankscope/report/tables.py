"""The report's tables, one builder per table, shared by report.md/.html and the LaTeX file.

Rows are runs or configurations in :class:`MethodKey` order; cells are formatted strings.
This module also keeps importable the names that used to live here before the report was
split (``Table``, ``to_markdown``, ``ReportData``, ...), so older imports keep working.
"""

from __future__ import annotations

from collections.abc import Callable

from rankscope.report.analysis_rows import per_run, rows_of, tuned_runs
from rankscope.report.data import (
    ReportData,
    Score,
    done_runs,
    failed_runs,
    is_baseline,
    sort_runs,
)
from rankscope.report.derived import cross_domain, param_counts, retention, tradeoffs
from rankscope.report.fmt import (
    Table,
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

__all__ = [  # the builders, and the names older code imports from here
    "ReportData",
    "Table",
    "cross_domain",
    "cross_domain_table",
    "delta_table",
    "failed_table",
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

SPECTRAL_SUMMARY = ("rel_fro", "stable_rank", "effective_rank", "sim_left")
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
    """Primary metric (%) ± stderr per run and eval task."""
    caption = "Primary metric per run and eval task (%, ± standard error); in-domain bold."
    return _per_task_table(data, done_runs(data.runs), _score_cell, caption)


def delta_table(data: ReportData) -> Table:
    """Change vs base (pp) per tuned run and eval task, retention included."""
    tuned = [r for r in done_runs(data.runs) if not is_baseline(r)]
    caption = "Change vs the base model per run (percentage points); in-domain bold."
    return _per_task_table(data, tuned, lambda s: fmt_pp(s.delta if s else None), caption)


def retention_table(data: ReportData) -> Table:
    """Retention-task score and its change vs base per configuration (mean ± std)."""
    cols = ["method", "train task", "seeds", "score (%)", "Δ vs base (pp)"]
    t = Table.make(cols, 2, f"Retention on {data.retention_task} (mean ± std across seeds).")
    for a in retention(data.agg, data.retention_task):
        score = fmt_pct(a.mean) + ("" if a.std is None else f" ± {fmt_pct(a.std)}")
        delta = fmt_pp(a.delta_mean, a.delta_std)
        t.rows.append([a.label, a.train_task or "–", str(a.n_seeds), score, delta])
    return t


def cross_domain_table(data: ReportData) -> Table:
    """All cross-domain matrices stacked: rows (method, train task), Δ pp per eval task."""
    tasks = data.eval_tasks
    std = {(a.key, a.train_task, a.task): a.delta_std for a in data.agg}
    caption = "Cross-domain change vs base (pp, mean ± std across seeds); in-domain bold."
    t = Table.make(["method", "train task", *(data.task_header(e) for e in tasks)], 2, caption)
    for m in cross_domain(data.agg, data.train_tasks, tasks):
        for train, values in zip(m.train_tasks, m.values, strict=True):
            if all(v is None for v in values):
                continue
            t.bold |= {(len(t.rows), 2 + j) for j, e in enumerate(tasks) if e == train}
            pairs = zip(values, tasks, strict=True)
            t.rows.append(
                [m.label, train, *(fmt_pp(v, std.get((m.key, train, e))) for v, e in pairs)]
            )
    return t


def tradeoff_table(data: ReportData) -> Table:
    """Per method: parameters trained and mean in-domain / cross-domain / retention Δ."""
    params = {p.key: p for p in param_counts(data.runs)}
    cols = [
        "method",
        "trainable params",
        "% of total",
        "in-domain Δ (pp)",
        "cross-domain Δ (pp)",
        "retention Δ (pp)",
    ]
    t = Table.make(
        cols, 1, "Per method: parameters trained and mean change vs base over train tasks."
    )
    for tr in tradeoffs(data.agg, data.retention_task):
        p = params.get(tr.key)
        size = [fmt_int(p.trainable), fmt_pct(p.fraction, 3)] if p else ["–", "–"]
        deltas = [fmt_pp(tr.in_domain), fmt_pp(tr.cross_domain), fmt_pp(tr.retention)]
        t.rows.append([tr.label, *size, *deltas])
    return t


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
        "results": results_table(data),
        "delta": delta_table(data),
        "retention": retention_table(data),
        "cross-domain": cross_domain_table(data),
        "cost": run_summary_table(data),
        "spectral": spectral_summary_table(data) if data.analysis else None,
        "failed": failed_table(data),
    }
