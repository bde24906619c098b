"""Progress callbacks: how the driver, the worker and the executors report what they do.

A module of its own (it imports nothing of rankscope) so that every layer can take a `Stages`
without importing the driver or the progress bars: `rankscope.progress` builds them for a
terminal or a log file, and everything else only calls them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Stages:
    """Progress callbacks of the stages (no-ops by default).

    The run callbacks are what a log without bars (a batch job's file) is made of:
    `run_start` when a run is handed to a worker (in-process, CPU pool, a GPU subprocess),
    `run_submitted` when it only went to a scheduler's queue (Slurm, Ray), where its real
    start is not seen here, and `run_end` when it finished (error None) or failed.
    """

    start: Callable[[str, int], None] = lambda stage, total: None
    advance: Callable[[str, int], None] = lambda stage, n: None
    step: Callable[[str, int, int], None] = lambda label, done, total: None
    note: Callable[[str], None] = lambda msg: None
    run_start: Callable[[str], None] = lambda run_id: None
    run_submitted: Callable[[str], None] = lambda run_id: None
    run_end: Callable[[str, str | None], None] = lambda run_id, error: None
