"""The local executor: runs one after another in this process (the CPU path).

In-process, the loaded base model and the tasks' items are reused across runs, and every unit
of results is ingested as soon as it is written (`on_unit`), so `rankscope status` is live.
With at least two runs' worth of GPUs, the runs go to `multigpu` (concurrent subprocesses);
on a CPU with `executor.cpu_workers` > 1, to `cpu_pool` (a pool of worker processes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from rankscope.config import SweepConfig
from rankscope.errors import ConfigError
from rankscope.executors import cpu_pool, multigpu
from rankscope.interrupts import check_stop
from rankscope.runner import execute_unit, failure_message
from rankscope.stages import Stages
from rankscope.sweep import sweep_for


def _enough_gpus(cfg: SweepConfig) -> bool:
    import torch

    per_run = cfg.executor.gpus_per_run
    return per_run > 0 and torch.cuda.device_count() >= 2 * per_run


def _any_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def submit(
    cfg: SweepConfig,
    sweep_dir: Path,
    run_ids: list[str],
    on_finished: Callable[[str, str | None], None],
    *,
    stages: Stages | None = None,
    on_unit: Callable[[str], None] | None = None,
) -> None:
    """Execute the runs in order; on_finished after each (it may raise StopSweep)."""
    if _enough_gpus(cfg):
        on_start = stages.run_start if stages else None
        return multigpu.submit(cfg, sweep_dir, run_ids, on_finished, on_start=on_start)
    if cfg.executor.cpu_workers > 1 and len(run_ids) > 1 and not _any_gpu():
        return cpu_pool.submit(cfg, sweep_dir, run_ids, on_finished, stages=stages)
    if Path(cfg.out_dir).resolve() != Path(sweep_dir).resolve():
        cfg = dataclasses.replace(cfg, output_dir=str(sweep_dir))
    sweep, stages = sweep_for(cfg), stages or Stages()
    for run_id in run_ids:
        check_stop("between runs")
        stages.run_start(run_id)
        notify = (lambda rid=run_id: on_unit(rid)) if on_unit else None
        try:
            execute_unit(sweep, run_id, stages, notify)
            error = None
        except KeyboardInterrupt:
            if on_unit:  # the store shows where it stopped
                on_unit(run_id)
            raise
        except ConfigError:
            raise
        except Exception as e:  # fault isolation: the run is failed, the sweep goes on
            error = sweep.dir.run(run_id).failure() or failure_message(e, run_id)
        on_finished(run_id, error)
    return None
