"""Executors: where a sweep's runs execute, behind one small interface.

`submit(cfg, sweep_dir, run_ids, on_finished)` executes the given runs (each through
`rankscope.runner.run_unit`, writing only into its run directory) and calls
`on_finished(run_id, None)` when a run's DONE exists, or `on_finished(run_id, message)` when
it failed; the driver ingests the run directory there. `on_finished` may raise `StopSweep`
(--fail-fast): the executor then stops starting runs and lets it propagate.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


class StopSweep(Exception):
    """Raised by on_finished to stop the sweep (--fail-fast); executors let it propagate."""


def _lazy(module: str) -> Callable[..., None]:
    """Import an executor only when used (submitit, ray are optional dependencies)."""

    def submit(*args: Any, **kwargs: Any) -> None:
        return importlib.import_module(f"rankscope.executors.{module}").submit(*args, **kwargs)

    return submit


EXECUTORS: dict[str, Callable[..., None]] = {
    "local": _lazy("local"),
    "slurm": _lazy("slurm"),
    "ray": _lazy("ray_exec"),
}
