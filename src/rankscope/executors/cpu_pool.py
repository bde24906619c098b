"""Several runs at once on one CPU machine: a pool of worker processes, each with its share
of the cores (`executor.cpu_workers`).

A small model's training step on a CPU is Python dispatch over ~100,000 module calls, not
arithmetic, so a second thread barely speeds up one run while a second run in its own process
nearly doubles the throughput (BENCHMARKS.md). The workers persist across runs: each loads
the sweep's tasks and base model once, like the in-process path, and executes runs through
`rankscope.runner.execute_unit`, writing only into their run directories; the driver (this
process) ingests each run when its worker reports it finished.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rankscope.config import SweepConfig
from rankscope.errors import ConfigError, RunFailed
from rankscope.interrupts import interrupt_handler
from rankscope.libs import quiet_libraries
from rankscope.rundir import SweepDir
from rankscope.runner import execute_unit, failure_message
from rankscope.stages import Stages
from rankscope.sweep import read_sweep_file, sweep_for

_SWEEP: Any = None  # the worker's Sweep (tasks' items, cached base model), built once


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    return max(1, (cores or os.cpu_count() or 1) // workers)


def _init(sweep_dir: str, threads: int) -> None:
    """Worker start: its thread share, quiet libraries, and the sweep it serves."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    quiet_libraries()
    global _SWEEP
    _SWEEP = sweep_for(read_sweep_file(Path(sweep_dir)))


def _run(run_id: str) -> tuple[str, str | None]:
    """One run in this worker: ('ok', None), ('failed', why) or ('config', message)."""
    try:
        with interrupt_handler():
            execute_unit(_SWEEP, run_id)
        return "ok", None
    except ConfigError as e:
        return "config", str(e)
    except KeyboardInterrupt:
        return "failed", "interrupted; rerun to resume"
    except Exception as e:  # fault isolation: the run is failed, the sweep goes on
        return "failed", _SWEEP.dir.run(run_id).failure() or failure_message(e, run_id)


def submit(
    cfg: SweepConfig,
    sweep_dir: Path,
    run_ids: list[str],
    on_finished: Callable[[str, str | None], None],
    *,
    stages: Stages | None = None,
) -> None:
    """Execute the runs `cfg.executor.cpu_workers` at a time; on_finished as each ends.

    A run goes to the pool only when a worker is free for it, so handing it over is its start
    (`stages.run_start`, a batch log's start line) and a fail-fast stop leaves none queued.
    """
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    stages = stages or Stages()
    workers = min(cfg.executor.cpu_workers, len(run_ids))
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),  # no fork of a process holding torch
        initializer=_init,
        initargs=(str(Path(sweep_dir).resolve()), threads_per_worker(workers)),
    )
    queue: deque[str] = deque(run_ids)
    pending: dict[Any, str] = {}
    n_eval = len(cfg.tasks.eval)
    unstarted: list[str] = []
    try:
        unstarted += _hand_out(pool, queue, pending, workers, stages)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                run_id = pending.pop(fut)
                try:
                    status, message = fut.result()
                except BrokenProcessPool:  # a worker was killed (the OOM killer, a signal)
                    if not SweepDir(Path(sweep_dir)).run(run_id).path.exists():
                        unstarted.append(run_id)  # still pending for the next `run`
                        continue
                    status = "failed"
                    message = "a worker process died during this run; rerun to resume it"
                if status == "config":
                    raise ConfigError(message or run_id)
                stages.advance("train", 1)
                stages.advance("evaluate", n_eval)
                stages.advance("analyze", 1)
                on_finished(run_id, message)
            unstarted += _hand_out(pool, queue, pending, workers, stages)
    finally:  # fail-fast, a config error or Ctrl-C: start nothing more (runs resume on rerun)
        pool.shutdown(wait=True, cancel_futures=True)
    if unstarted:  # the finished runs are ingested; these are pending for the next `run`
        raise RunFailed(
            f"a worker process died: {len(unstarted)} run(s) not started "
            f"({', '.join(unstarted[:3])}{', ...' if len(unstarted) > 3 else ''}); "
            "rerun to start them"
        )


def _hand_out(
    pool: Any, queue: deque[str], pending: dict[Any, str], workers: int, stages: Stages
) -> list[str]:
    """Give queued runs to the free workers; returns the runs left when the pool broke."""
    from concurrent.futures.process import BrokenProcessPool

    while queue and len(pending) < workers:
        try:
            pending[pool.submit(_run, queue[0])] = queue[0]
        except BrokenProcessPool:  # a worker was killed: the rest wait for the next `run`
            left = list(queue)
            queue.clear()
            return left
        stages.run_start(queue.popleft())
    return []
