"""What the report says: its blocks (headings, prose, tables, figures) in reading order.

The blocks are format-free, so :mod:`rankscope.report.render` writes the same content as
Markdown and as HTML. Prose names methods through :attr:`MethodKey.prose`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from rankscope.report.data import ReportData, failed_runs
from rankscope.report.derived import tradeoffs
from rankscope.report.fmt import Table, fmt_pct, fmt_pp
from rankscope.report.plot import FigureOut
from rankscope.report.tables import report_tables

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


# ------------------------------------------------------------------ content
def best_run_lines(data: ReportData) -> list[str]:
    """Per eval task: the best configuration (mean over seeds) and its gain over base."""
    lines = []
    for task in data.eval_tasks:
        cands = [a for a in data.agg if a.task == task]
        if not cands:
            continue
        best = max(cands, key=lambda a: a.mean)
        best_is_base = best.key.info.baseline
        if best_is_base:
            who, gain = "the base model (no tuned run beats it)", ""
        else:
            who = f"{best.key.prose} trained on {best.train_task}"
            gain = f", {fmt_pp(best.delta_mean)} pp vs base" if best.delta_mean is not None else ""
        base = next((a.mean for a in cands if a.key.info.baseline), None)
        ref = [f"base {fmt_pct(base)} %"] if base is not None and not best_is_base else []
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
            f"**{tr.key.prose}**: retention {fmt_pp(tr.retention)} pp on {ret} (mean "
            f"over {tr.n_train_tasks} train task(s)); in-domain "
            f"{fmt_pp(tr.in_domain)} pp, cross-domain {fmt_pp(tr.cross_domain)} pp."
        )
    return lines


def summary_blocks(data: ReportData, tables: dict[str, Table | None]) -> list[Block]:
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
    trade = tables["tradeoffs"]
    if trade is not None and trade.rows:
        blocks.append(TableBlock(trade))
    return blocks


RESULT_TABLES = (
    ("Score per run", "results"),
    ("Change vs base per run", "delta"),
    ("Retention", "retention"),
    ("Cross-domain matrix", "cross-domain"),
    ("Training cost", "cost"),
)


def results_blocks(tables: dict[str, Table | None]) -> list[Block]:
    blocks: list[Block] = [Heading("Results")]
    for title, name in RESULT_TABLES:
        table = tables[name]
        if table is not None and table.rows:
            blocks += [Heading(title, 3), TableBlock(table)]
    if len(blocks) == 1:
        blocks.append(Para("No run has finished yet."))
    return blocks


def figure_blocks(title: str, figs: list[FigureOut]) -> list[Block]:
    return [Heading(title)] + [FigureBlock(f) for f in figs] if figs else []


def analysis_blocks(
    data: ReportData, tables: dict[str, Table | None], figs: list[FigureOut]
) -> list[Block]:
    if not data.analysis:
        return []
    blocks: list[Block] = [Heading("Analysis")]
    spec = tables["spectral"]
    if spec is not None and spec.rows:
        blocks += [Heading("Spectral summary", 3), TableBlock(spec)]
    blocks += [FigureBlock(f) for f in figs]
    if len(blocks) == 1:
        blocks.append(Para("The store holds analysis rows, but too few to draw anything."))
    return blocks


def failed_blocks(data: ReportData, tables: dict[str, Table | None]) -> list[Block]:
    table = tables["failed"]
    if not failed_runs(data.runs) or table is None:
        return []
    return [Heading("Failed runs"), TableBlock(table)]


def report_blocks(
    data: ReportData,
    figs: list[FigureOut],
    analysis_figs: list[FigureOut],
    tables: dict[str, Table | None] | None = None,
) -> list[Block]:
    tables = tables if tables is not None else report_tables(data)
    return [
        Heading(f"rankscope report: {data.sweep_name}", 1),
        *summary_blocks(data, tables),
        *results_blocks(tables),
        *figure_blocks("Figures", figs),
        *analysis_blocks(data, tables, analysis_figs),
        *failed_blocks(data, tables),
        Para(f"LaTeX (booktabs) versions of the tables are in `{TEX_NAME}`."),
    ]
