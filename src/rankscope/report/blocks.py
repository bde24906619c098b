"""The report's format-free blocks (headings, prose, tables, figures, collapsed groups):
:mod:`rankscope.report.content` and the sections beside it build them, and
:mod:`rankscope.report.render` writes them as Markdown and as HTML."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from rankscope.report.fmt import Table
from rankscope.report.plot import FigureOut


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
    titled: bool = True
    """Whether the HTML shows the figure's title above it (the headline figure has none)."""


@dataclass
class Details:
    """Blocks shown collapsed in the HTML (a `<details>` element), under a one-line summary."""

    summary: str
    blocks: list[Block]


Block = Union[Heading, Para, Bullets, TableBlock, FigureBlock, Details]  # noqa: UP007


def collapsed(title: str, table: Table) -> Details:
    """A full table under its heading, collapsed in the HTML."""
    return Details(f"{title} ({len(table.rows)} rows)", [Heading(title, 3), TableBlock(table)])
