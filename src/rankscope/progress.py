"""Progress on the screen: rich bars while a sweep runs here, or plain lines in a log file.

The bars are one per stage with ETA, plus one for the current unit of work. Where no bars can
be drawn (output to a file: a Slurm job, nohup, CI), `plain_stages` logs one line per run
start, finish and failure instead; `stages_for` picks between the two. Both fill in the
callbacks of `rankscope.stages.Stages`; what `rankscope status` shows of a run is read from its
directory (`rankscope.rundir.RunDir.status`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import timedelta

from rich.console import Console
from rich.errors import MarkupError
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from rankscope.stages import Stages


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

    def run_end(run_id: str, error: str | None) -> None:
        if error is not None:  # the bars show the rest; a failure needs its reason
            note(f"[red]failed[/red] {run_id}: {error}")

    with progress:
        yield Stages(start=start, advance=advance, step=step, note=note, run_end=run_end)


def stages_for(console: Console) -> AbstractContextManager[Stages]:
    """Bars where rich redraws them in place (a terminal, Jupyter), plain lines elsewhere.

    On a file or a pipe rich draws its bars once, when they stop: a batch job's log would say
    nothing from the first line to the last. A dumb terminal cannot redraw either.
    """
    if console.is_jupyter or (console.is_terminal and not console.is_dumb_terminal):
        return rich_stages(console)
    return plain_stages(console)


@contextmanager
def plain_stages(console: Console) -> Iterator[Stages]:
    """One plain line (no ANSI codes, flushed) per run start, finish and failure, with the
    elapsed time and an ETA, for a log that someone reads while the sweep runs."""
    log = PlainLog(console)
    yield Stages(
        start=log.start,
        advance=log.advance,
        note=log.note,
        run_start=log.run_start,
        run_submitted=log.run_submitted,
        run_end=log.run_end,
    )


def clock(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))


@dataclass
class StageCount:
    total: int
    done: int
    t0: float


class PlainLog:
    """The state behind `plain_stages`: runs started and finished, stages' counts, clocks.

    ETA = the mean wall time per finished run since the first run started (the base-model
    build before it is no run's) times the runs left; concurrent runs are in that mean already.
    Stages' own steps print a line per 10 % only while no run is reported (building the base
    model, `rankscope analyze`, `world build`): during runs, the run lines say it.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.t0 = time.monotonic()
        self.first_run: float | None = None
        self.total = 0  # runs to do: the train stage's total
        self.started: dict[str, float] = {}
        self.n_started = self.n_finished = 0
        self.stages: dict[str, StageCount] = {}

    def line(self, text: str) -> None:
        print(text, file=self.console.file, flush=True)

    def clocks(self, eta: str | None) -> str:
        elapsed = f"elapsed {clock(time.monotonic() - self.t0)}"
        return elapsed if eta is None else f"{elapsed}, eta {eta}"

    def run_eta(self) -> str:
        if not self.n_finished or self.first_run is None:
            return "?"
        per_run = (time.monotonic() - self.first_run) / self.n_finished
        return clock(per_run * max(self.runs() - self.n_finished, 0))

    def runs(self) -> int:
        return max(self.total, self.n_started)

    def start(self, stage: str, total: int) -> None:
        if stage == "train":
            self.total = total
        self.stages[stage] = StageCount(total, 0, time.monotonic())
        self.line(f"{stage}: {total} to do | {self.clocks(None)}")

    def advance(self, stage: str, n: int) -> None:
        c = self.stages.get(stage)
        if c is None or self.first_run is not None:
            return
        before, c.done = c.done, c.done + n
        if c.total <= 0 or 10 * c.done // c.total == 10 * before // c.total:
            return  # not a new tenth
        eta = clock((time.monotonic() - c.t0) / c.done * max(c.total - c.done, 0))
        pct = 100 * c.done // c.total
        self.line(f"{stage}: {pct} % ({c.done}/{c.total}) | {self.clocks(eta)}")

    def note(self, msg: str) -> None:
        try:
            self.line(Text.from_markup(msg).plain)
        except MarkupError:  # not markup after all (a message with brackets of its own)
            self.line(msg)

    def _begin(self, run_id: str, verb: str) -> None:
        if self.first_run is None:
            self.first_run = time.monotonic()
        self.n_started += 1
        self.line(
            f"[{self.n_started}/{self.runs()}] {verb:<6} {run_id} | {self.clocks(self.run_eta())}"
        )

    def run_start(self, run_id: str) -> None:
        self.started[run_id] = time.monotonic()
        self._begin(run_id, "start")

    def run_submitted(self, run_id: str) -> None:
        self._begin(run_id, "submitted")  # to a queue: its real start is not seen here

    def run_end(self, run_id: str, error: str | None) -> None:
        self.n_finished += 1
        t = self.started.pop(run_id, None)
        took = "" if t is None else f" {duration(time.monotonic() - t)}"
        what = "done  " if error is None else "FAILED"
        why = "" if error is None else ": " + " ".join(error.split())
        counter = f"[{self.n_finished}/{self.runs()}]"
        self.line(f"{counter} {what} {run_id}{took}{why} | {self.clocks(self.run_eta())}")


def duration(seconds: float) -> str:
    """A run's own time: seconds while short, else h:mm:ss."""
    return f"{seconds:.1f} s" if seconds < 60 else clock(seconds)
