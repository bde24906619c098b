"""Ray: each run a Ray task with declared resources, on an existing cluster or a local one.

A task calls `runner.run_unit` (or `accelerate launch` of it when the run spans several GPUs).
A lost worker (node died, process killed) is retried up to `executor.max_retries` times and
resumes from the run's last checkpoint on disk; an exception raised by the run itself is not
retried (`retry_exceptions=False`): it is the run's failure, recorded in its error.txt. Tasks
write only into their run directory, which must be on storage the driver can read (a shared
filesystem on a multi-node cluster); the driver ingests each finished run into the store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rankscope.config import ExecutorConfig, SweepConfig
from rankscope.errors import ConfigError
from rankscope.executors.multigpu import launch_run
from rankscope.libs import quiet_libraries
from rankscope.rundir import RunDir, SweepDir
from rankscope.runner import run_unit
from rankscope.stages import Stages


def run_task(sweep_dir: str, run_id: str, executor: ExecutorConfig) -> str:
    """The body of one Ray task (module level, so workers import it instead of unpickling)."""
    quiet_libraries()
    if executor.gpus_per_run > 1:
        launch_run(executor, Path(sweep_dir), run_id)  # on the GPUs Ray gave this task
    else:
        run_unit(Path(sweep_dir), run_id)
    return run_id


def connect(cfg: SweepConfig) -> None:
    """Join the configured cluster (None = start a local instance), unless already connected."""
    import ray

    if not ray.is_initialized():
        ray.init(address=cfg.executor.address)
    gpus = ray.cluster_resources().get("GPU", 0)
    # a local instance cannot grow: a task asking for absent GPUs would wait forever
    if cfg.executor.address is None and cfg.executor.gpus_per_run > gpus:
        raise ConfigError(
            f"executor.gpus_per_run: {cfg.executor.gpus_per_run} GPUs per run, but the local "
            f"Ray instance has {gpus:g}; set executor.gpus_per_run: 0 to run on the CPU"
        )


def task_error(exc: BaseException) -> str:
    """The run's own exception and message (Ray wraps it, with the worker's traceback)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        text = str(cause).splitlines()[0] if str(cause) else ""
        return f"{type(cause).__name__}: {text}" if text else type(cause).__name__
    lines = [x for x in str(exc).splitlines() if x.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def submit(
    cfg: SweepConfig,
    sweep_dir: Path,
    run_ids: list[str],
    on_finished: Callable[[str, str | None], None],
    *,
    stages: Stages | None = None,
) -> None:
    """Run every run as a Ray task; call on_finished (in this process) as each one ends."""
    import ray

    if not run_ids:
        return
    sweep_dir = Path(sweep_dir).resolve()  # workers may start in another directory
    connect(cfg)
    e = cfg.executor
    task = ray.remote(run_task).options(
        num_gpus=e.gpus_per_run,
        num_cpus=e.cpus_per_run,
        max_retries=e.max_retries,
        retry_exceptions=False,
        name="rankscope-run",
    )
    refs: dict[Any, str] = {task.remote(str(sweep_dir), rid, e): rid for rid in run_ids}
    if stages is not None:  # queued: when a task starts is Ray's to say, not seen here
        for run_id in run_ids:
            stages.run_submitted(run_id)
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)  # blocks; no busy loop
            for ref in ready:
                run_id = refs.pop(ref)
                on_finished(run_id, _result(ref, SweepDir(sweep_dir).run(run_id).path))
    finally:  # fail-fast or Ctrl-C: stop what is still queued or running
        for ref in refs:
            ray.cancel(ref)  # a KeyboardInterrupt in the task: its `finally` blocks run


def _result(ref: Any, run_dir: Path) -> str | None:
    import ray

    try:
        ray.get(ref)
    except ray.exceptions.RayError as exc:
        return task_error(exc)
    if not RunDir(run_dir).reached():  # DONE, or stopped at its rung (halving)
        return f"task ended without writing DONE in {run_dir}"
    return None
