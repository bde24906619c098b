"""Several GPUs on one machine: runs go concurrently as subprocesses, each pinned to its GPUs.

Each run is `python -m rankscope.runner <sweep_dir> <run_id>` with CUDA_VISIBLE_DEVICES set to
its `executor.gpus_per_run` GPUs; a run that spans several GPUs goes through `accelerate launch`
(DDP by default, or whatever `executor.accelerate_config` says: FSDP, DeepSpeed). A queue starts
the next run as soon as enough GPUs are free. Workers write only into their run directory; the
driver (this process) is told of each finished run through `on_finished`, and ingests it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from rankscope.config import ExecutorConfig, SweepConfig
from rankscope.errors import ConfigError
from rankscope.rundir import Marker, RunDir, SweepDir

BASE_PORT = 29500  # torch.distributed's default rendezvous port; one per concurrent run


def runner_command(
    executor: ExecutorConfig, sweep_dir: Path, run_id: str, *, port: int | None = None
) -> list[str]:
    """The command line that executes one run (through accelerate when it spans GPUs)."""
    n = executor.gpus_per_run
    if n <= 1:
        return [sys.executable, "-m", "rankscope.runner", str(sweep_dir), run_id]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n)]
    if executor.accelerate_config:
        cmd += ["--config_file", str(executor.accelerate_config)]
    else:
        cmd.append("--multi_gpu")  # plain DDP when no accelerate config says otherwise
    if port is not None:  # concurrent multi-GPU runs on one machine need distinct ports
        cmd += ["--main_process_port", str(port)]
    return cmd + ["-m", "rankscope.runner", str(sweep_dir), run_id]


def launch_run(executor: ExecutorConfig, sweep_dir: Path, run_id: str) -> None:
    """Run a multi-GPU run in the foreground (a Slurm job's or a Ray task's GPUs); raise if
    it failed. A SystemExit here (submitit's requeue) makes subprocess.run kill the launcher."""
    cmd = runner_command(executor, sweep_dir, run_id, port=_free_port())
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0:
        error = SweepDir(Path(sweep_dir)).run(run_id) / Marker.ERROR
        hint = f"; see {error}" if error.exists() else ""
        raise RuntimeError(f"accelerate launch of {run_id} exited with {done.returncode}{hint}")


def _free_port() -> int:
    """A port free now: jobs on a shared node cannot agree on distinct ones beforehand."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def visible_devices() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when set (ids or UUIDs), else all."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


@dataclass
class GpuPool:
    """Free GPUs; a run takes `n` of them and gives them back when it ends."""

    free: list[str]
    order: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.order = list(self.free)

    def take(self, n: int) -> list[str] | None:
        if len(self.free) < n:
            return None
        taken, self.free = self.free[:n], self.free[n:]
        return taken

    def give(self, gpus: list[str]) -> None:
        # keep the original order so that runs land on the same GPUs from one sweep to the next
        self.free = [g for g in self.order if g in set(self.free) | set(gpus)]


@dataclass
class _Worker:
    proc: subprocess.Popen
    gpus: list[str]
    log_path: Path
    log: IO[str]


def _check(cfg: SweepConfig, devices: list[str]) -> int:
    n = cfg.executor.gpus_per_run
    if n < 1:
        raise ConfigError("executor.gpus_per_run: must be >= 1 to run on GPUs, got 0")
    if n > len(devices):
        raise ConfigError(
            f"executor.gpus_per_run: {n} GPUs per run, but only {len(devices)} visible "
            f"({','.join(devices) or 'none'}); lower it to at most {len(devices)}"
        )
    return n


def _launch(cfg: SweepConfig, sweep_dir: Path, run_id: str, gpus: list[str]) -> _Worker:
    log_path = SweepDir(Path(sweep_dir)).log(run_id)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("a")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=",".join(gpus))
    port = BASE_PORT + _port_offset(gpus)
    cmd = runner_command(cfg.executor, sweep_dir, run_id, port=port)
    log.write(f"$ CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} {' '.join(cmd)}\n")
    log.flush()
    # a session of its own: a Ctrl-C in the terminal reaches the driver only, which then
    # asks each worker once to stop cleanly (see _stop); a second SIGINT would stop it at once
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    return _Worker(proc, gpus, log_path, log)


def _port_offset(gpus: list[str]) -> int:
    """Disjoint GPU sets give distinct offsets (the first GPU's index, or a hash of its UUID)."""
    first = gpus[0]
    return int(first) if first.isdigit() else sum(map(ord, first)) % 1000


def outcome(run_dir: Path, returncode: int, log_path: Path) -> str | None:
    """None when the run finished (exit 0 and DONE written), else why it did not."""
    if returncode == 0 and RunDir(run_dir).reached():  # DONE, or stopped at its rung
        return None
    if returncode == 0:
        return f"worker exited without writing DONE (log: {log_path})"
    return f"{last_line(log_path) or f'exit code {returncode}'} (log: {log_path})"


def last_line(path: Path) -> str:
    """The last non-empty line of a log: for a Python failure, the exception and its message."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return next((x.strip() for x in reversed(lines) if x.strip()), "")


def submit(
    cfg: SweepConfig,
    sweep_dir: Path,
    run_ids: list[str],
    on_finished: Callable[[str, str | None], None],
    *,
    devices: list[str] | None = None,
    poll_s: float = 0.5,
    on_start: Callable[[str], None] | None = None,
) -> None:
    """Run `run_ids` on this machine's GPUs, `gpus_per_run` each, as many at once as fit;
    `on_start(run_id)` as each one's process starts on its GPUs (a log's start line)."""
    sweep_dir = Path(sweep_dir).resolve()  # workers may start in another directory
    devices = visible_devices() if devices is None else list(devices)
    n = _check(cfg, devices)
    pool, pending = GpuPool(devices), deque(run_ids)
    running: dict[str, _Worker] = {}
    try:
        while pending or running:
            while pending and (gpus := pool.take(n)) is not None:
                run_id = pending.popleft()
                running[run_id] = _launch(cfg, sweep_dir, run_id, gpus)
                if on_start:
                    on_start(run_id)
            time.sleep(poll_s)  # poll: a sweep's runs last minutes to hours
            for run_id, w in list(running.items()):
                if w.proc.poll() is None:
                    continue
                del running[run_id]
                w.log.close()
                pool.give(w.gpus)
                run_dir = SweepDir(sweep_dir).run(run_id).path
                on_finished(run_id, outcome(run_dir, w.proc.returncode, w.log_path))
    finally:  # fail-fast or Ctrl-C: stop the workers still running (they resume on rerun)
        _stop(list(running.values()))


def _stop(workers: list[_Worker], grace_s: float = 60.0) -> None:
    """SIGINT (the runner saves a checkpoint at the next step and exits), then SIGKILL."""
    for w in workers:
        w.proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace_s
    for w in workers:
        try:
            w.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait()
        w.log.close()
