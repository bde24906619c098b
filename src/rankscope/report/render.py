"""Assemble report.md, report.html (self-contained) and the LaTeX tables from blocks.

The report's tables are built here from the tidy rows of :mod:`rankscope.report.tables`.
The report is a list of blocks (headings, paragraphs, bullet lists, tables, figures)
rendered twice: as Markdown that links ``figures/*.png``, and as HTML with the same
figures embedded as base64 PNG, inline CSS and no external resource.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Union

from rankscope.report.analysis_figures import spectral_summary_table
from rankscope.report.figures import FigureOut
from rankscope.report.tables import (
    ReportData,
    Row,
    Score,
    Table,
    cross_domain,
    done_runs,
    failed_runs,
    fmt_int,
    fmt_num,
    fmt_pct,
    fmt_pp,
    method_label,
    param_counts,
    retention,
    short_error,
    sort_runs,
    to_latex,
    to_markdown,
    tradeoffs,
)

TEX_NAME = "report_tables.tex"


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str  # may contain **bold** spans


@dataclass
class Bullets:
    items: list[str]


@dataclass
class TableBlock:
    table: Table


@dataclass
class FigureBlock:
    fig: FigureOut


Block = Union[Heading, Para, Bullets, TableBlock, FigureBlock]  # noqa: UP007


# ------------------------------------------------------------------ tables
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
    cells = [run["run_id"], method_label(run), run.get("train_task") or "–"]
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
    tuned = [r for r in done_runs(data.runs) if r["method"] != "base"]
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
    std = {(a.label, a.train_task, a.task): a.delta_std for a in data.agg}
    caption = "Cross-domain change vs base (pp, mean ± std across seeds); in-domain bold."
    t = Table.make(["method", "train task", *(data.task_header(e) for e in tasks)], 2, caption)
    for m in cross_domain(data.agg, data.train_tasks, tasks):
        for train, values in zip(m.train_tasks, m.values, strict=True):
            if all(v is None for v in values):
                continue
            t.bold |= {(len(t.rows), 2 + j) for j, e in enumerate(tasks) if e == train}
            pairs = zip(values, tasks, strict=True)
            t.rows.append(
                [m.label, train, *(fmt_pp(v, std.get((m.label, train, e))) for v, e in pairs)]
            )
    return t


def tradeoff_table(data: ReportData) -> Table:
    """Per method: parameters trained and mean in-domain / cross-domain / retention Δ."""
    params = {p.label: p for p in param_counts(data.runs)}
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
        p = params.get(tr.label)
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


# ------------------------------------------------------------------ content
def prose_label(label: str) -> str:
    """'full' -> 'full SFT', 'lora r=8' -> 'LoRA r=8' (for sentences, not tables)."""
    if label.startswith("full"):
        return "full SFT" + label[4:]
    return "LoRA" + label[4:] if label.startswith("lora") else label


def best_run_lines(data: ReportData) -> list[str]:
    """Per eval task: the best configuration (mean over seeds) and its gain over base."""
    lines = []
    for task in data.eval_tasks:
        cands = [a for a in data.agg if a.task == task]
        if not cands:
            continue
        best = max(cands, key=lambda a: a.mean)
        if best.method == "base":
            who, gain = "the base model (no tuned run beats it)", ""
        else:
            who = f"{prose_label(best.label)} trained on {best.train_task}"
            gain = f", {fmt_pp(best.delta_mean)} pp vs base" if best.delta_mean is not None else ""
        base = next((a.mean for a in cands if a.method == "base"), None)
        ref = [f"base {fmt_pct(base)} %"] if base is not None and best.method != "base" else []
        if task in data.chance:
            ref.append(f"chance {fmt_pct(data.chance[task])} %")
        lines.append(
            f"**{data.task_header(task)}** ({best.metric}): best is {who} at "
            f"{fmt_pct(best.mean)} %{gain}" + (f" ({', '.join(ref)})" if ref else "") + "."
        )
    return lines


def retention_lines(data: ReportData) -> list[str]:
    """Per method: the retention cost, with in-domain and cross-domain change beside it."""
    ret = data.retention_task
    lines = []
    for tr in tradeoffs(data.agg, ret):
        if tr.retention is None:
            continue
        lines.append(
            f"**{prose_label(tr.label)}**: retention {fmt_pp(tr.retention)} pp on {ret} (mean "
            f"over {tr.n_train_tasks} train task(s)); in-domain "
            f"{fmt_pp(tr.in_domain)} pp, cross-domain {fmt_pp(tr.cross_domain)} pp."
        )
    return lines


def summary_blocks(data: ReportData) -> list[Block]:
    runs = data.runs
    done = sum(r["status"] == "done" for r in runs)
    models = sorted({r["model"] for r in runs if r.get("model")})
    intro = (
        f"Sweep **{data.sweep_name}**: model {', '.join(models) or '–'}; {done} of "
        f"{len(runs)} runs finished. Train tasks: {', '.join(data.train_tasks) or '–'}; "
        f"eval tasks: {', '.join(data.eval_tasks) or '–'}; retention task: "
        f"{data.retention_task or '–'}. Scores are in %, changes vs the base model in "
        "percentage points (pp); several seeds are shown as mean ± std."
    )
    blocks: list[Block] = [Heading("Summary"), Para(intro), Heading("What this shows", 3)]
    best = best_run_lines(data)
    blocks.append(Bullets(best) if best else Para("No finished run has eval results yet."))
    cost = retention_lines(data)
    if cost:
        blocks += [Para("Retention cost of each method:"), Bullets(cost)]
    trade = tradeoff_table(data)
    if trade.rows:
        blocks.append(TableBlock(trade))
    return blocks


def results_blocks(data: ReportData) -> list[Block]:
    blocks: list[Block] = [Heading("Results")]
    for title, table in (
        ("Score per run", results_table(data)),
        ("Change vs base per run", delta_table(data)),
        ("Retention", retention_table(data)),
        ("Cross-domain matrix", cross_domain_table(data)),
        ("Training cost", run_summary_table(data)),
    ):
        if table.rows:
            blocks += [Heading(title, 3), TableBlock(table)]
    if len(blocks) == 1:
        blocks.append(Para("No run has finished yet."))
    return blocks


def figure_blocks(title: str, figs: list[FigureOut]) -> list[Block]:
    return [Heading(title)] + [FigureBlock(f) for f in figs] if figs else []


def analysis_blocks(data: ReportData, figs: list[FigureOut]) -> list[Block]:
    if not data.analysis:
        return []
    blocks: list[Block] = [Heading("Analysis")]
    spec = spectral_summary_table(data)
    if spec is not None and spec.rows:
        blocks += [Heading("Spectral summary", 3), TableBlock(spec)]
    blocks += [FigureBlock(f) for f in figs]
    if len(blocks) == 1:
        blocks.append(Para("The store holds analysis rows, but too few to draw anything."))
    return blocks


def failed_blocks(data: ReportData) -> list[Block]:
    if not failed_runs(data.runs):
        return []
    return [Heading("Failed runs"), TableBlock(failed_table(data))]


def report_blocks(
    data: ReportData, figs: list[FigureOut], analysis_figs: list[FigureOut]
) -> list[Block]:
    return [
        Heading(f"rankscope report: {data.sweep_name}", 1),
        *summary_blocks(data),
        *results_blocks(data),
        *figure_blocks("Figures", figs),
        *analysis_blocks(data, analysis_figs),
        *failed_blocks(data),
        Para(f"LaTeX (booktabs) versions of the tables are in `{TEX_NAME}`."),
    ]


# ------------------------------------------------------------------ markdown
def to_md(blocks: list[Block]) -> str:
    parts = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"{'#' * b.level} {b.text}\n")
        elif isinstance(b, Para):
            parts.append(b.text + "\n")
        elif isinstance(b, Bullets):
            parts.append("".join(f"- {item}\n" for item in b.items))
        elif isinstance(b, TableBlock):
            cap = f"*{b.table.caption}*\n\n" if b.table.caption else ""
            parts.append(cap + to_markdown(b.table))
        else:
            parts.append(
                f"### {b.fig.title}\n\n![{b.fig.title}](figures/{b.fig.path.name})"
                f"\n\n*{b.fig.caption}*\n"
            )
    return "\n".join(parts)


# ------------------------------------------------------------------ html
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #ddd;padding-bottom:.3em}h2{border-bottom:1px solid #eee;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.85em;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.25em .6em}th{background:#f4f4f4}td.num{text-align:right;
font-variant-numeric:tabular-nums}tr:nth-child(even) td{background:#fafafa}
caption{caption-side:top;text-align:left;font-style:italic;color:#555;padding:.3em 0}
figure{margin:1em 0 2em}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}code{background:#f4f4f4;padding:0 .2em}
"""


def inline_html(text: str) -> str:
    """Escape text, then turn **bold** and `code` spans into tags."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    rows = []
    for i, row in enumerate(table.rows):
        cells = []
        for j, c in enumerate(row):
            text = html.escape(c)
            if (i, j) in table.bold and c:
                text = f"<strong>{text}</strong>"
            cls = ' class="num"' if table.is_numeric(j) else ""
            cells.append(f"<td{cls}>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def html_figure(fig: FigureOut) -> str:
    data = base64.b64encode(fig.path.read_bytes()).decode("ascii")
    return (
        f"<figure><h3>{html.escape(fig.title)}</h3>"
        f'<img alt="{html.escape(fig.title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>"
    )


def to_html(blocks: list[Block], title: str) -> str:
    body = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, TableBlock):
            body.append(html_table(b.table))
        else:
            body.append(html_figure(b.fig))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


# ------------------------------------------------------------------ latex
def to_tex(data: ReportData) -> str:
    """Every table of the report as a booktabs table environment."""
    tables = [
        ("tradeoffs", tradeoff_table(data)),
        ("results", results_table(data)),
        ("delta", delta_table(data)),
        ("retention", retention_table(data)),
        ("cross-domain", cross_domain_table(data)),
        ("cost", run_summary_table(data)),
        ("spectral", spectral_summary_table(data) if data.analysis else None),
        ("failed", failed_table(data)),
    ]
    header = f"% rankscope tables for sweep {data.sweep_name}; needs \\usepackage{{booktabs}}\n\n"
    return header + "\n".join(
        to_latex(t, f"tab:rankscope-{name}") for name, t in tables if t is not None and t.rows
    )


def render_report(
    data: ReportData, figs: list[FigureOut], analysis_figs: list[FigureOut]
) -> dict[str, str]:
    """The report's texts: {'md': ..., 'html': ..., 'tex': ...}."""
    blocks = report_blocks(data, figs, analysis_figs)
    return {
        "md": to_md(blocks),
        "html": to_html(blocks, f"rankscope: {data.sweep_name}"),
        "tex": to_tex(data),
    }
