"""Slurm through submitit: one job array per sweep, a job per run, requeued on preemption.

A run keeps its whole state on disk (Trainer checkpoints and stage outputs in its run
directory), so a preempted or timed-out job needs no in-memory state: `RunJob.checkpoint()`
resubmits the same call, and the requeued job resumes from the run's last checkpoint. Jobs
write only into their run directory; the driver polls the jobs and ingests finished runs
through `on_finished`, so the results store is never written from a compute node.

`executor.slurm_cluster: local` runs the same code path through submitit's local executor
(subprocesses on this machine), which is how the tests drive it without a Slurm cluster.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit

from rankscope.config import ExecutorConfig, SweepConfig
from rankscope.errors import ConfigError
from rankscope.executors.multigpu import launch_run
from rankscope.libs import quiet_libraries
from rankscope.rundir import RunDir, SweepDir
from rankscope.runner import run_unit
from rankscope.stages import Stages

POLL_S = 2.0  # between checks of the jobs' states (submitit caches sacct for Slurm anyway)


class RunJob(submitit.helpers.Checkpointable):
    """One run as a submitit job: `runner.run_unit`, or `accelerate launch` of it on >1 GPU."""

    def __init__(self, executor: ExecutorConfig) -> None:
        self.executor = executor

    def __call__(self, sweep_dir: str, run_id: str) -> str:
        quiet_libraries()  # the job log shows the run's errors, not the libraries' chatter
        if self.executor.gpus_per_run > 1:
            launch_run(self.executor, Path(sweep_dir), run_id)
        else:
            run_unit(Path(sweep_dir), run_id)
        return run_id

    def checkpoint(self, sweep_dir: str, run_id: str) -> submitit.helpers.DelayedSubmission:
        """Requeue the same call: the run resumes from its last Trainer checkpoint on disk."""
        return submitit.helpers.DelayedSubmission(self, sweep_dir, run_id)


def make_executor(cfg: SweepConfig, sweep_dir: Path) -> Any:
    """The submitit executor of a sweep, its parameters taken from `cfg.executor`."""
    e = cfg.executor
    check_cluster(e.slurm_cluster)
    executor = submitit.AutoExecutor(
        folder=Path(sweep_dir) / "slurm",
        cluster=e.slurm_cluster,
        # time-outs requeue at most max_retries times (preemptions do not count in submitit)
        slurm_max_num_timeout=e.max_retries,
        local_max_num_timeout=e.max_retries,
    )
    executor.update_parameters(
        name=f"rankscope-{cfg.name}",
        timeout_min=e.slurm_time_min,
        nodes=1,
        tasks_per_node=1,  # one task per run; a multi-GPU run forks its processes via accelerate
        gpus_per_node=e.gpus_per_run,
        cpus_per_task=e.cpus_per_run,
        slurm_partition=e.slurm_partition,
        slurm_array_parallelism=e.slurm_array_parallelism,
    )
    return executor


def check_cluster(cluster: str | None) -> None:
    """Refuse what submitit would do silently: run a 'slurm' sweep locally without Slurm."""
    options = ("slurm", "local", "debug")
    if cluster is not None and cluster not in options:
        raise ConfigError(
            f"executor.slurm_cluster: {cluster!r} is not one of {', '.join(options)} or null"
        )
    if cluster in (None, "slurm") and shutil.which("srun") is None:
        raise ConfigError(
            "executor.kind: slurm, but Slurm is not available here (no srun on PATH); run "
            "rankscope on a Slurm login node, or set executor.slurm_cluster: local to run the "
            "jobs on this machine"
        )


def job_error(job: Any, run_dir: Path) -> str | None:
    """None when the job finished its run (DONE written), else the reason and the log path."""
    try:
        exc = job.exception()
    except Exception as e:  # the debug executor raises the run's own exception here
        exc = e
    if exc is None:
        if RunDir(run_dir).reached():  # DONE, or stopped at its rung (halving)
            return None
        return f"job {job.job_id} ended without writing DONE (log: {job.paths.stderr})"
    return f"{_last_trace_line(str(exc))} (log: {job.paths.stderr})"


def _last_trace_line(text: str) -> str:
    """submitit wraps the worker's traceback between dashed lines; keep its last line."""
    parts = text.split("-" * 22)
    body = parts[1] if len(parts) >= 3 else text
    lines = [x.strip() for x in body.splitlines() if x.strip() and not set(x.strip()) <= {"-"}]
    return lines[-1] if lines else "job failed"


def submit(
    cfg: SweepConfig,
    sweep_dir: Path,
    run_ids: list[str],
    on_finished: Callable[[str, str | None], None],
    *,
    poll_s: float = POLL_S,
    stages: Stages | None = None,
) -> None:
    """Submit the runs as one job array; call on_finished (in this process) as each ends."""
    if not run_ids:
        return
    sweep_dir = Path(sweep_dir).resolve()  # workers may start in another directory
    executor = make_executor(cfg, sweep_dir)
    jobs = executor.map_array(RunJob(cfg.executor), [str(sweep_dir)] * len(run_ids), run_ids)
    if stages is not None:  # queued: when a job starts is Slurm's to say, not seen here
        for run_id in run_ids:
            stages.run_submitted(run_id)
    pending = list(zip(jobs, run_ids, strict=True))
    try:
        while pending:
            still = []
            for job, run_id in pending:
                if _done(job):
                    on_finished(run_id, job_error(job, SweepDir(sweep_dir).run(run_id).path))
                else:
                    still.append((job, run_id))
            pending = still
            if pending:
                time.sleep(poll_s)
    finally:  # fail-fast or Ctrl-C: cancel what is still queued or running
        for job, _ in pending:
            job.cancel(check=False)


def _done(job: Any) -> bool:
    try:
        return bool(job.done())
    except Exception:  # debug executor: the run raised while executing in-process
        return True
