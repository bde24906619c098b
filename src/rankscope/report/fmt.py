"""Cell formatting and the generic :class:`Table` with its Markdown and LaTeX renderings.

Kept apart from the data so the same table renders identically in report.md, report.html
and report_tables.tex, and so the formatting rules (%, pp, dashes) are in one place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from rankscope.stats import Comparison, Interval

SHOWN = " Each configuration at its learning rate selected on validation."
"""Caption tail of every table that shows one lr per configuration."""
CI = "mean ± 95% CI half-width over seeds (t-interval; one seed: no interval)"


# ------------------------------------------------------------------ formatting
def short_error(error: str | None, limit: int = 300) -> str:
    """The last non-empty line of an error (a traceback's message), shortened."""
    lines = [ln.strip() for ln in (error or "").strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fmt_pct(v: float | None, digits: int = 1) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{100 * v:.{digits}f}"


def fmt_pp(v: float | None, std: float | None = None, digits: int = 1) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    text = f"{100 * v:+.{digits}f}"
    return text if std is None else f"{text} ± {100 * std:.{digits}f}"


def fmt_ci_pct(ci: Interval | None, digits: int = 1) -> str:
    """A level as '45.3 ± 2.1' (%, mean ± 95% half-width over seeds); one seed: '45.3'."""
    return "–" if ci is None else fmt_pct(ci.est, digits) + _half(ci, digits)


def fmt_ci_pp(ci: Interval | None, digits: int = 1) -> str:
    """A change as '+4.1 ± 2.0' (pp, mean ± 95% half-width over seeds); one seed: '+4.1'."""
    return "–" if ci is None else fmt_pp(ci.est, ci.half_width, digits)


def _half(ci: Interval, digits: int) -> str:
    return "" if ci.half_width is None else f" ± {100 * ci.half_width:.{digits}f}"


def fmt_p(p: float) -> str:
    """'p = 0.034', 'p < 0.001'."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def fmt_comparison(c: Comparison, digits: int = 1) -> str:
    """'+4.1 pp [1.8, 6.3], p = 0.003' (Holm-adjusted p when there is one)."""
    p = c.p if c.p_adj is None else c.p_adj
    return (
        f"{fmt_pp(c.diff, digits=digits)} pp [{100 * c.lo:.{digits}f}, "
        f"{100 * c.hi:.{digits}f}], {fmt_p(p)}"
    )


def fmt_num(v: float | None, digits: int = 3) -> str:
    """Fixed decimals; thousands separators and no decimals from 10,000 up."""
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.{digits}f}"


def fmt_sig(v: float | None, digits: int = 3) -> str:
    """``digits`` significant figures (for metrics spanning orders of magnitude)."""
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}g}"


def fmt_int(v: int | float | None) -> str:
    return "–" if v is None else f"{int(v):,}"


# ------------------------------------------------------------------ generic table
@dataclass
class Table:
    """A rendered-ready table: cell strings, and which columns are numeric (right-aligned)."""

    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool] | None = None
    caption: str = ""
    bold: set[tuple[int, int]] = field(default_factory=set)

    def is_numeric(self, j: int) -> bool:
        return bool(self.numeric and self.numeric[j])

    @classmethod
    def make(cls, columns: Sequence[str], n_text: int, caption: str = "") -> Table:
        """An empty table whose first ``n_text`` columns are text, the rest numeric."""
        return cls(list(columns), [], [j >= n_text for j in range(len(columns))], caption)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown; cells in ``table.bold`` are wrapped in ``**``."""
    head = "| " + " | ".join(_md_cell(c) for c in table.columns) + " |"
    align = (
        "|"
        + "|".join("---:" if table.is_numeric(j) else ":---" for j in range(len(table.columns)))
        + "|"
    )
    lines = [head, align]
    for i, row in enumerate(table.rows):
        cells = [
            f"**{_md_cell(c)}**" if (i, j) in table.bold and c else _md_cell(c)
            for j, c in enumerate(row)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "–": "--",
    "‖": r"$\|$",
    "…": r"\ldots{}",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: Table, label: str = "") -> str:
    """A booktabs ``table`` environment (needs \\usepackage{booktabs})."""
    spec = "".join("r" if table.is_numeric(j) else "l" for j in range(len(table.columns)))
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in table.columns) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(table.rows):
        cells = [
            rf"\textbf{{{latex_escape(c)}}}" if (i, j) in table.bold else latex_escape(c)
            for j, c in enumerate(row)
        ]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.caption:
        lines.append(rf"\caption{{{latex_escape(table.caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
