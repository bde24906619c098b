"""What the report says: its blocks (headings, prose, tables, figures) in reading order.

The blocks are format-free, so :mod:`rankscope.report.render` writes the same content as
Markdown and as HTML. Prose names methods through :attr:`MethodKey.prose`.
"""

from __future__ import annotations

import json
import statistics

from rankscope.report.blocks import (
    Block,
    Bullets,
    FigureBlock,
    Heading,
    Para,
    TableBlock,
    collapsed,
)
from rankscope.report.data import ReportData, failed_runs
from rankscope.report.decision import decisions
from rankscope.report.fmt import Table, fmt_comparison, fmt_pct
from rankscope.report.headline import (
    HEADLINE_FIGURE,
    HOW,
    confirmed_line,
    decision_line,
    options_table,
)
from rankscope.report.plot import FigureOut
from rankscope.report.replay import FIGURE as REPLAY_FIGURE
from rankscope.report.replay import replay_blocks
from rankscope.report.selection import impossible, shown_agg
from rankscope.report.significance import (
    BASE,
    CROSS,
    FULL,
    IN,
    N_BOOT,
    RETENTION,
    summary_claims,
    units,
)
from rankscope.report.stopped import stopped_blocks
from rankscope.report.tables import report_tables
from rankscope.stats import Comparison

TEX_NAME = "report_tables.tex"


# ------------------------------------------------------------------ summary
COLUMNS = (  # (reference, kind) -> column of the claims table
    ((BASE, IN), "in-domain Δ vs base"),
    ((BASE, CROSS), "cross-domain Δ vs base"),
    ((BASE, RETENTION), "retention Δ vs base"),
    ((FULL, IN), "in-domain Δ vs full SFT"),
    ((FULL, RETENTION), "retention Δ vs full SFT"),
)
NO_DIFF = "no significant difference"


def claim_text(c: Comparison) -> str:
    """'+4.1 pp [1.8, 6.3], p = 0.003'; not significant: 'no significant difference (...)'."""
    return fmt_comparison(c) if c.significant else f"{NO_DIFF} ({fmt_comparison(c)})"


def _items_per_task(data: ReportData) -> dict[str, int]:
    n: dict[str, int] = {}
    for s in data.scores:
        if s.n:
            n[s.task] = max(n.get(s.task, 0), int(s.n))
    return n


def how_sure_line(data: ReportData) -> str:
    """Seeds per configuration, items per eval task, the median 95% CI half-width."""
    seeds = [len(r) for r in units(data).values()]
    n = _items_per_task(data)
    items = ", ".join(f"{t} {n[t]}" for t in data.eval_tasks if t in n) or "–"
    widths = sorted(
        a.ci.half_width
        for a in shown_agg(data)
        if not a.key.info.baseline and a.ci is not None and a.ci.half_width is not None
    )
    lo, hi = (min(seeds), max(seeds)) if seeds else (0, 0)
    text = f"**How sure:** {lo if lo == hi else f'{lo}–{hi}'} seed(s) per configuration; "
    text += f"items per eval task: {items}; "
    if not widths:
        return text + (
            "one seed per configuration, so no interval over seeds: the tests below see item "
            "noise only, not seed noise, and understate the uncertainty."
        )
    median = 100 * statistics.median(widths)
    text += f"median 95% CI half-width of a configuration's mean score: {median:.1f} pp"
    return text + spread_clause(data) + "."


def spread_clause(data: ReportData) -> str:
    """The seed-to-seed standard deviation of the in-domain and retention scores: its median
    over configurations and the largest, named (what one more seed could move a score by)."""
    keep = (data.retention_task,)
    spreads = [
        (a.std, a)
        for a in shown_agg(data)
        if a.std is not None and a.train_task and a.task in (a.train_task, *keep)
    ]
    if not spreads:
        return ""
    worst_sd, worst = max(spreads, key=lambda x: x[0])
    median = 100 * statistics.median(sd for sd, _ in spreads)
    return (
        f"; seed-to-seed standard deviation of the in-domain and retention scores: median "
        f"{median:.1f} pp, largest {100 * worst_sd:.1f} pp ({worst.key.prose} trained on "
        f"{worst.train_task}, scored on {worst.task})"
    )


def reference_lines(data: ReportData) -> list[str]:
    """Per eval task: its metric, the base model's score and the chance level."""
    base = {a.task: a for a in data.agg if a.key.info.baseline}
    lines = []
    for task in data.eval_tasks:
        metric = next((a.metric for a in data.agg if a.task == task), None)
        if metric is None:
            continue
        ref = [f"base {fmt_pct(base[task].mean)} %"] if task in base else []
        if task in data.chance:
            ref.append(f"chance {fmt_pct(data.chance[task])} %")
        lines.append(f"**{data.task_header(task)}** ({metric}): {', '.join(ref) or '–'}.")
    return lines


def claims_tables(data: ReportData) -> list[Table]:
    """Per train task: one row per configuration, one column per kind of claim."""
    claims = summary_claims(data)
    seeds = {u: len(r) for u, r in units(data).items()}
    out = []
    for task in data.train_tasks:
        mine = [c for c in claims if c.train_task == task]
        if not mine:
            continue
        cols = [(k, name) for k, name in COLUMNS if any((c.reference, c.kind) == k for c in mine)]
        caption = (
            f"Trained on {task}: paired differences (pp, 95% CI, Holm-corrected p over all "
            f"{len(claims)} comparisons of this summary); significant ones bold."
        )
        t = Table.make(["configuration", "seeds", *(name for _, name in cols)], 2, caption)
        keys = list(dict.fromkeys(c.key for c in mine))
        for key in keys:
            cell = {(c.reference, c.kind): c.comparison for c in mine if c.key == key}
            row = [key.lr_label, str(seeds.get((task, key), "–"))]
            for j, (k, _) in enumerate(cols):
                c = cell.get(k)
                row.append("–" if c is None else claim_text(c))
                if c is not None and c.significant:
                    t.bold.add((len(t.rows), 2 + j))
            t.rows.append(row)
        out.append(t)
    return out


def summary_blocks(data: ReportData, tables: dict[str, Table | None]) -> list[Block]:
    runs = data.runs
    done = sum(r["status"] == "done" for r in runs)
    models = sorted({r["model"] for r in runs if r.get("model")})
    intro = (
        f"Sweep **{data.sweep_name}**: model {', '.join(models) or '–'}; {done} of "
        f"{len(runs)} runs finished. Train tasks: {', '.join(data.train_tasks) or '–'}; "
        f"eval tasks: {', '.join(data.eval_tasks) or '–'}; retention task: "
        f"{data.retention_task or '–'}. Scores are in %, changes in percentage points (pp); "
        "numbers over seeds are mean ± 95% CI half-width. Each configuration is shown at "
        "the learning rate that scored best on validation items (never on test)."
    )
    gsm8k = gsm8k_setting(data)
    if gsm8k:
        intro += f" GSM8K is scored like lm-eval's gsm8k task: {gsm8k}."
    groups = data.retention_groups
    if groups:
        intro += (
            f" Retention is scored on the {len(groups)} {data.retention_task} subjects that no "
            f"training task of the sweep covers (neither trained on nor in a training task's "
            f"domain): {', '.join(groups)}."
        )
    blocks: list[Block] = [Heading("Summary"), Para(intro), Para(how_sure_line(data))]
    decontam = decontamination_line(data)
    if decontam:
        blocks.append(Para(decontam))
    refs = reference_lines(data)
    blocks += [Bullets(refs)] if refs else [Para("No finished run has eval results yet.")]
    blocks += significance_blocks(data)
    trade = tables["tradeoffs"]
    if trade is not None and trade.rows:
        blocks += [Heading("Trade-offs", 3), TableBlock(trade)]
    drift = tables.get("drift")
    if drift is not None and drift.rows:
        blocks += [Heading("Retention beyond accuracy", 3), TableBlock(drift)]
    return blocks


def gsm8k_setting(data: ReportData) -> str | None:
    """How GSM8K was scored (its few-shot setting moves its numbers), from the stored config;
    None when the sweep does not evaluate it."""
    if "gsm8k" not in data.eval_tasks:
        return None
    from rankscope.tasks import gsm8k
    from rankscope.tasks.base import DataConfig

    try:
        section = json.loads(data.meta.get("config_json") or "{}").get("data") or {}
        known = {k: v for k, v in section.items() if k in DataConfig.__dataclass_fields__}
        return gsm8k.setting(DataConfig(**known))
    except (ValueError, TypeError, AttributeError):
        return None


def decontamination_line(data: ReportData) -> str | None:
    """What the GPT-3 13-gram decontamination took out of the training sets (stored by the
    driver in the store's meta); None for a sweep that recorded none."""
    try:
        doc = json.loads(data.meta.get("decontamination") or "null")
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    hits = [o for o in doc.get("overlaps", []) if o.get("dropped")]
    head = (
        f"Decontamination ({doc.get('ngram', 13)}-gram overlap, the GPT-3 rule, questions only, "
        "boilerplate ignored): "
    )
    if not hits:
        return head + "no training item overlaps an eval item; nothing was dropped."
    parts = [
        f"{o['dropped']} of {o['train_items']} {o['train_task']} training items overlap "
        f"{o['eval_task']}"
        for o in hits
    ]
    return head + "; ".join(parts) + ". They were dropped from training (never from evaluation)."


def significance_blocks(data: ReportData) -> list[Block]:
    blocks: list[Block] = []
    claims = claims_tables(data)
    if claims:
        blocks += [Heading("Which differences are real", 3), Para(TESTS)]
        blocks += [TableBlock(t) for t in claims]
    lost = impossible(data)
    if lost:
        names = ", ".join(f"{k.prose} on {t}" for t, k in lost)
        blocks.append(
            Para(
                f"No validation scores, so no lr could be selected for: {names}; "
                "every lr of these is shown."
            )
        )
    return blocks


TESTS = (
    "Each difference is a paired test on the same eval items (aligned by item id): with "
    "several seeds a t test whose variance adds the seed-to-seed spread of the per-seed "
    "means to the items' sampling variance, with the seeds' degrees of freedom (2 for 3 "
    "seeds: it takes a large, steady difference to be significant); one seed against one, "
    f"the exact McNemar test and a bootstrap interval over items ({N_BOOT} replicates). "
    "Cross-domain pools the items of every eval task "
    "that is neither the train task nor the retention task. The p-values are Holm-corrected "
    "over all the comparisons below together; a difference is called one only when the "
    f'corrected p < 0.05, otherwise the cell says "{NO_DIFF}". The intervals in brackets '
    "are per-comparison 95% intervals (not corrected), so one may exclude 0 where the "
    "corrected p does not reach 0.05."
)
RESULT_TABLES = (
    ("Score per run", "results"),
    ("Change vs base per run", "delta"),
    ("Generative tasks: strict and flexible extraction", "generative"),
    ("Retention", "retention"),
    ("Cross-domain matrix", "cross-domain"),
    ("Learning rate selection", "lr-selection"),
    ("Training cost", "cost"),
)


def results_blocks(tables: dict[str, Table | None]) -> list[Block]:
    blocks: list[Block] = [Heading("Results")]
    for title, name in RESULT_TABLES:
        table = tables[name]
        if table is not None and table.rows:
            blocks.append(collapsed(title, table))
    if len(blocks) == 1:
        blocks.append(Para("No run has finished yet."))
    return blocks


def headline_blocks(data: ReportData, figs: list[FigureOut]) -> list[Block]:
    """The answer first: one line per train task with the recommendation, the trade-off
    figure, how it was chosen, and the table of options (collapsed)."""
    ds = decisions(data)
    if not ds:
        return []
    blocks: list[Block] = [Heading("Recommendation"), Bullets([decision_line(d) for d in ds])]
    blocks += [FigureBlock(f, titled=False) for f in figs if f.name == HEADLINE_FIGURE]
    confirmed = [x for d in ds if (x := confirmed_line(d))]
    if confirmed:
        blocks.append(Bullets(confirmed))
    blocks.append(Para(HOW + " `rankscope recommend DIR --max-retention-loss PP` applies limits."))
    for d in ds:
        blocks.append(collapsed(f"Options trained on {d.train_task}", options_table(d)))
    return blocks


OWN_SECTION = (HEADLINE_FIGURE, REPLAY_FIGURE)
"""Figures shown in their own section, not among the result figures."""


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
        blocks.append(collapsed("Spectral summary", spec))
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
        *headline_blocks(data, figs),
        *summary_blocks(data, tables),
        *replay_blocks(data, figs),
        *figure_blocks("Figures", [f for f in figs if f.name not in OWN_SECTION]),
        *results_blocks(tables),
        *analysis_blocks(data, tables, analysis_figs),
        *stopped_blocks(data),
        *failed_blocks(data, tables),
        Para(f"LaTeX (booktabs) versions of the tables are in `{TEX_NAME}`."),
    ]
