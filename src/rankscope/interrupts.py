"""Ctrl-C and crash-test hooks, shared by the worker, the driver and the executors.

A first Ctrl-C inside a deferring section (training, evaluation) only asks for a clean stop at
the next safe point, so a checkpoint is saved; a second one, or one outside such a section,
stops at once. `kill_point` lets the crash tests SIGKILL a process at a named point. Nothing
here imports the rest of rankscope, so every layer may use it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Interrupted(KeyboardInterrupt):
    """Stopped on request (Ctrl-C) at a safe point; the run resumes on the next start."""


class _Stop:
    """Ctrl-C state: the first SIGINT inside a deferring section asks for a clean stop."""

    requested = False
    deferring = 0


STOP = _Stop()


def _on_sigint(signum: int, frame: Any) -> None:
    if STOP.requested or not STOP.deferring:
        raise KeyboardInterrupt  # second Ctrl-C, or nothing worth saving: stop at once
    STOP.requested = True
    sys.stderr.write(
        "\nstopping after the next step (a checkpoint is saved); Ctrl-C again to stop at once\n"
    )


@contextmanager
def interrupt_handler() -> Iterator[None]:
    """Install the two-stage Ctrl-C handler (main thread only) for the duration."""
    STOP.requested = False
    try:
        previous = signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread: keep Python's default
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Inside, a first Ctrl-C only sets STOP.requested; the code stops at its next safe point."""
    STOP.deferring += 1
    try:
        yield
    finally:
        STOP.deferring -= 1


def check_stop(where: str) -> None:
    """A safe point: raise Interrupted if a stop was requested."""
    if STOP.requested:
        raise Interrupted(f"interrupted {where}")


def kill_point(name: str) -> None:
    """Crash-test hook: RANKSCOPE_TEST_KILL_AT=<name>:<n> SIGKILLs this process at the n-th hit."""
    spec = os.environ.get("RANKSCOPE_TEST_KILL_AT")
    if not spec or spec.rsplit(":", 1)[0] != name:
        return
    hits = _KILL_HITS[name] = _KILL_HITS.get(name, 0) + 1
    if hits == int(spec.rsplit(":", 1)[1]):
        os.kill(os.getpid(), signal.SIGKILL)


_KILL_HITS: dict[str, int] = {}
