"""Write the report's blocks as report.md and a self-contained report.html, and its tables
as LaTeX.

Markdown links ``figures/*.png``; HTML embeds the same figures as base64 PNG with inline
CSS and no external resource, so the file can be mailed or archived on its own.
"""

from __future__ import annotations

import base64
import html
import re

from rankscope.report.blocks import Block, Bullets, Details, Heading, Para, TableBlock
from rankscope.report.content import TEX_NAME, report_blocks
from rankscope.report.data import ReportData
from rankscope.report.fmt import Table, to_latex, to_markdown
from rankscope.report.plot import FigureOut
from rankscope.report.tables import report_tables

__all__ = ["TEX_NAME", "render_report", "to_html", "to_md", "to_tex"]


# ------------------------------------------------------------------ markdown
def to_md(blocks: list[Block]) -> str:
    parts = []
    for b in blocks:
        if isinstance(b, Details):  # GitHub renders Markdown inside <details> after a blank line
            inner = to_md(b.blocks)
            parts.append(
                f"<details><summary>{html.escape(b.summary)}</summary>\n\n{inner}\n</details>\n"
            )
        elif isinstance(b, Heading):
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
details{margin:.3em 0}summary{cursor:pointer;color:#245;font-weight:600}
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


def html_figure(fig: FigureOut, titled: bool = True) -> str:
    data = base64.b64encode(fig.path.read_bytes()).decode("ascii")
    head = f"<h3>{html.escape(fig.title)}</h3>" if titled else ""
    return (
        f"<figure>{head}"
        f'<img alt="{html.escape(fig.title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>"
    )


def html_body(blocks: list[Block]) -> list[str]:
    body = []
    for b in blocks:
        if isinstance(b, Details):
            inner = "\n".join(html_body(b.blocks))
            body.append(
                f"<details><summary>{inline_html(b.summary)}</summary>\n{inner}\n</details>"
            )
        elif isinstance(b, Heading):
            body.append(f"<h{b.level}>{inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, TableBlock):
            body.append(html_table(b.table))
        else:
            body.append(html_figure(b.fig, b.titled))
    return body


def to_html(blocks: list[Block], title: str) -> str:
    body = html_body(blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


# ------------------------------------------------------------------ latex
def to_tex(data: ReportData, tables: dict[str, Table | None] | None = None) -> str:
    """Every table of the report as a booktabs table environment."""
    tables = tables if tables is not None else report_tables(data)
    header = f"% rankscope tables for sweep {data.sweep_name}; needs \\usepackage{{booktabs}}\n\n"
    return header + "\n".join(
        to_latex(t, f"tab:rankscope-{name}")
        for name, t in tables.items()
        if t is not None and t.rows
    )


def render_report(
    data: ReportData, figs: list[FigureOut], analysis_figs: list[FigureOut]
) -> dict[str, str]:
    """The report's texts: {'md': ..., 'html': ..., 'tex': ...}."""
    tables = report_tables(data)  # built once, shown in the Markdown/HTML and the LaTeX
    blocks = report_blocks(data, figs, analysis_figs, tables)
    return {
        "md": to_md(blocks),
        "html": to_html(blocks, f"rankscope: {data.sweep_name}"),
        "tex": to_tex(data, tables),
    }
