"""Rich progress: one bar per stage with ETA, plus one for the current unit of work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from rankscope.pipeline import Stages


@contextmanager
def rich_stages(console: Console) -> Iterator[Stages]:
    progress = Progress(
        TextColumn("{task.description:<44}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    bars: dict[str, int] = {}
    current: dict[str, int] = {}

    def start(stage: str, total: int) -> None:
        bars[stage] = progress.add_task(stage, total=total)

    def advance(stage: str, n: int) -> None:
        if stage in bars:
            progress.advance(bars[stage], n)

    def step(label: str, done: int, total: int) -> None:
        if "id" not in current:
            current["id"] = progress.add_task(label, total=total)
        progress.update(current["id"], description=label[:44], completed=done, total=total)

    def note(msg: str) -> None:
        progress.console.print(msg)

    with progress:
        yield Stages(start=start, advance=advance, step=step, note=note)
