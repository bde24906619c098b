"""Executors for many machines, on a real tiny sweep: Slurm (through submitit's local
executor), Ray (a local instance on the CPU) and several GPUs (a fake device list) must give
the results store the local executor gives; a preempted job is requeued and resumes; runs that
finish together lose and duplicate no rows.

The sweep: the small toy world's base model and one LoRA run (r = 4) on 16 toy-arith items,
evaluated on 16 items of three tasks; two runs, so two can run at once.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from helpers import store_rows
from sweep_configs import small_sweep

from rankscope.config import SweepConfig
from rankscope.errors import ConfigError, RunFailed
from rankscope.executors import multigpu, slurm
from rankscope.pipeline import run_sweep
from rankscope.rundir import STORE_NAME
from rankscope.store import Store, ingest_run
from rankscope.sweep import write_sweep_file

RUN_IDS = ["base", "toy-arith__lora-r4-a8-lr3e-3__s0"]
LORA = RUN_IDS[1]


def _cfg(out: Path, cache_dir: Path, *extra: str) -> SweepConfig:
    return small_sweep(
        out,
        cache_dir,
        "methods.full.enabled=false",
        "methods.lora.ranks=[4]",
        "tasks.max_train_items=16",
        "tasks.max_eval_items=16",
        "train.epochs=1",
        "train.logging_steps=1",
        "analysis.enabled=false",
        "executor.gpus_per_run=0",
        *extra,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir, small_model_dir) -> tuple[SweepConfig, dict]:
    """The sweep through the local executor (in-process, sequential)."""
    cfg = _cfg(tmp_path_factory.mktemp("local"), cache_dir)
    outcome = run_sweep(cfg, report=False)
    assert sorted(outcome.done) == sorted(RUN_IDS) and not outcome.failed
    rows = store_rows(cfg.out_dir / STORE_NAME, exact=False)
    # 2 runs x (3 eval tasks + the train task's validation split) x 16 items
    assert len(rows["runs"]) == 2 and len(rows["predictions"]) == 2 * 4 * 16 and rows["train_log"]
    return cfg, rows


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance for the module (it takes ~10 s to start)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _span(run_dir: Path) -> tuple[float, float]:
    """When a worker started (config.yaml written) and finished (DONE written) a run."""
    return (run_dir / "config.yaml").stat().st_mtime, (run_dir / "DONE").stat().st_mtime


# ----------------------------------------------------------------------------- Slurm
@pytest.mark.slow
def test_slurm_through_submitit_local_gives_the_local_store(reference, tmp_path, cache_dir):
    cfg = _cfg(tmp_path, cache_dir, "executor.kind=slurm", "executor.slurm_cluster=local")
    outcome = run_sweep(cfg, report=False)
    assert sorted(outcome.done) == sorted(RUN_IDS) and not outcome.failed
    assert store_rows(cfg.out_dir / STORE_NAME, exact=False) == reference[1]
    # each run was a submitit job with its own logs, in the sweep's slurm/ folder
    assert len(list((tmp_path / "slurm").glob("*_0_log.out"))) == 2


@pytest.mark.slow
def test_preempted_job_is_requeued_and_resumes_from_its_checkpoint(
    tmp_path, cache_dir, small_model_dir
):
    psutil = pytest.importorskip("psutil")  # installed with ray[default]
    cfg = _cfg(
        tmp_path,
        cache_dir,
        "executor.kind=slurm",
        "executor.slurm_cluster=local",
        "methods.base=false",
        "tasks.max_train_items=64",
        "train.epochs=2",
        "train.batch_size=2",
        "train.grad_accum=1",
        "train.save_steps=4",
    )
    write_sweep_file(cfg, tmp_path)
    job = slurm.make_executor(cfg, tmp_path).submit(slurm.RunJob(cfg.executor), str(tmp_path), LORA)
    trainer = tmp_path / "runs" / LORA / "trainer"
    deadline = time.monotonic() + 120
    while not list(trainer.glob("checkpoint-*/COMPLETE")):  # a whole checkpoint is on disk
        assert time.monotonic() < deadline and not job.done(), job.stderr()
        time.sleep(0.1)
    # what Slurm does before a preemption or time-out: USR2 to the job's task process
    (task,) = psutil.Process(job._process.pid).children()  # submitit's controller -> task
    task.send_signal(signal.SIGUSR2)
    job.wait()
    assert job.exception() is None, job.exception()
    out = (job.stdout() or "") + (job.stderr() or "")
    assert "Calling checkpoint method" in out and "Requeued job" in out
    rdir = tmp_path / "runs" / LORA
    assert slurm.job_error(job, rdir) is None
    resumed = json.loads((rdir / "TRAINED").read_text())["resumed_from_step"]
    assert 4 <= resumed < 64  # resumed from a checkpoint, not from scratch, not after the end
    # the loss curve is whole: every logged step once, across the interruption
    steps = [json.loads(x)["step"] for x in (rdir / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 65))


def test_checkpoint_resubmits_the_same_run(tmp_path):
    job = slurm.RunJob(SweepConfig().executor)
    again = job.checkpoint(str(tmp_path), LORA)
    assert again.function is job and again.args == (str(tmp_path), LORA)


def test_failed_job_reports_the_run_error_and_its_log(tmp_path, cache_dir):
    cfg = _cfg(tmp_path, cache_dir, "executor.kind=slurm", "executor.slurm_cluster=local")
    write_sweep_file(cfg, tmp_path)
    seen: dict[str, str | None] = {}
    slurm.submit(cfg, tmp_path, ["no-such-run"], seen.__setitem__, poll_s=0.2)
    (error,) = seen.values()
    assert "ConfigError" in error and "not in the sweep's plan" in error
    assert "(log: " in error and error.split("(log: ")[1].rstrip(")").endswith(".err")


# ----------------------------------------------------------------------------- Ray
@pytest.mark.slow
def test_ray_two_concurrent_runs_give_the_local_store(reference, tmp_path, cache_dir, ray_local):
    cfg = _cfg(tmp_path, cache_dir, "executor.kind=ray")
    outcome = run_sweep(cfg, report=False)
    assert sorted(outcome.done) == sorted(RUN_IDS) and not outcome.failed
    assert store_rows(cfg.out_dir / STORE_NAME, exact=False) == reference[1]
    (s0, e0), (s1, e1) = (_span(tmp_path / "runs" / r) for r in RUN_IDS)
    assert s0 < e1 and s1 < e0  # the two runs were executing at the same time


# ----------------------------------------------------------------------------- CPU workers
def test_cpu_workers_run_at_once_and_give_the_local_store(reference, tmp_path, cache_dir):
    cfg = _cfg(tmp_path, cache_dir, "executor.cpu_workers=2")
    outcome = run_sweep(cfg, report=False)
    assert sorted(outcome.done) == sorted(RUN_IDS) and not outcome.failed
    assert store_rows(cfg.out_dir / STORE_NAME, exact=False) == reference[1]
    (s0, e0), (s1, e1) = (_span(tmp_path / "runs" / r) for r in RUN_IDS)
    assert s0 < e1 and s1 < e0  # the two runs were executing at the same time


def test_a_killed_cpu_worker_fails_its_run_and_the_rerun_finishes_it(
    reference, tmp_path, cache_dir, monkeypatch
):
    from rankscope.executors import cpu_pool

    cfg = _cfg(tmp_path, cache_dir, "executor.cpu_workers=2")
    write_sweep_file(cfg, tmp_path)
    seen: dict[str, str | None] = {}
    monkeypatch.setenv("RANKSCOPE_TEST_KILL_AT", "step:1")  # SIGKILL at the first train step
    try:
        cpu_pool.submit(cfg, tmp_path, RUN_IDS, seen.__setitem__)
    except RunFailed as e:  # the pool broke before the other worker had started 'base'
        assert "1 run(s) not started (base); rerun to start them" in str(e)
    assert seen[LORA] == "a worker process died during this run; rerun to resume it"
    monkeypatch.delenv("RANKSCOPE_TEST_KILL_AT")
    again = run_sweep(cfg, report=False)
    assert LORA in again.done and not again.failed
    assert store_rows(cfg.out_dir / STORE_NAME, exact=False) == reference[1]


def test_a_run_id_not_in_the_sweep_stops_the_cpu_pool_as_it_stops_local(tmp_path, cache_dir):
    from rankscope.executors import cpu_pool

    cfg = _cfg(tmp_path, cache_dir, "executor.cpu_workers=2")
    write_sweep_file(cfg, tmp_path)
    with pytest.raises(ConfigError, match="no-such-run"):
        cpu_pool.submit(cfg, tmp_path, ["no-such-run", "no-such-run-2"], lambda *a: None)


def test_threads_per_worker_share_the_cores():
    from rankscope.executors.cpu_pool import threads_per_worker

    assert [threads_per_worker(w, cores=16) for w in (1, 2, 3, 16, 32)] == [16, 8, 5, 1, 1]


@pytest.mark.slow
def test_ray_task_failure_carries_the_exception(tmp_path, cache_dir, ray_local):
    from rankscope.executors import ray_exec

    cfg = _cfg(tmp_path, cache_dir, "executor.kind=ray")
    write_sweep_file(cfg, tmp_path)
    seen: dict[str, str | None] = {}
    ray_exec.submit(cfg, tmp_path, ["no-such-run"], seen.__setitem__)
    assert seen["no-such-run"].startswith("ConfigError: run id 'no-such-run' is not in")


def _copy_finished(reference, tmp_path, cache_dir, *extra: str) -> SweepConfig:
    """A sweep dir holding the reference's finished run dirs and no store."""
    cfg = _cfg(tmp_path, cache_dir, *extra)
    shutil.copytree(reference[0].out_dir / "runs", tmp_path / "runs")
    write_sweep_file(cfg, tmp_path)
    return cfg


@pytest.mark.slow
def test_runs_finishing_at_the_same_moment_lose_and_duplicate_no_rows(
    reference, tmp_path, cache_dir, ray_local
):
    from rankscope.executors import ray_exec

    # finished run dirs: both tasks return at once (run_unit sees DONE), in the same ray.wait
    cfg = _copy_finished(reference, tmp_path, cache_dir, "executor.kind=ray")
    store, calls = Store(tmp_path / STORE_NAME), []

    def on_finished(run_id: str, error: str | None) -> None:
        calls.append((run_id, error))
        ingest_run(store, tmp_path / "runs" / run_id)

    ray_exec.submit(cfg, tmp_path, RUN_IDS, on_finished)
    ray_exec.submit(cfg, tmp_path, RUN_IDS, on_finished)  # a retried sweep ingests again
    store.close()
    assert sorted(calls) == sorted([(r, None) for r in RUN_IDS] * 2)
    assert store_rows(tmp_path / STORE_NAME, exact=False) == reference[1]


def _ingest_at(barrier, db: str, run_dir: str) -> None:
    store = Store(Path(db))
    barrier.wait()
    ingest_run(store, Path(run_dir))
    store.close()


@pytest.mark.slow
def test_two_processes_ingesting_at_once_lose_and_duplicate_no_rows(reference, tmp_path, cache_dir):
    _copy_finished(reference, tmp_path, cache_dir)
    Store(tmp_path / STORE_NAME).close()  # the schema exists before both writers start
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    dirs = [tmp_path / "runs" / r for r in RUN_IDS] * 2  # each run ingested twice, at once
    procs = [
        ctx.Process(target=_ingest_at, args=(barrier, str(tmp_path / STORE_NAME), str(d)))
        for d in dirs
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    assert store_rows(tmp_path / STORE_NAME, exact=False) == reference[1]


# ----------------------------------------------------------------------------- several GPUs
def test_runner_command_single_and_multi_gpu(tmp_path):
    cfg = SweepConfig()
    cfg.executor.gpus_per_run = 1
    cmd = multigpu.runner_command(cfg.executor, tmp_path, LORA, port=29501)
    assert cmd[1:] == ["-m", "rankscope.runner", str(tmp_path), LORA]  # no launcher, no port
    cfg.executor.gpus_per_run = 4
    cmd = multigpu.runner_command(cfg.executor, tmp_path, LORA, port=29503)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--num_processes") + 1] == "4" and "--multi_gpu" in cmd
    assert cmd[cmd.index("--main_process_port") + 1] == "29503"
    assert cmd[-4:] == ["-m", "rankscope.runner", str(tmp_path), LORA]
    cfg.executor.accelerate_config = "configs/accelerate/fsdp.yaml"
    cmd = multigpu.runner_command(cfg.executor, tmp_path, LORA)
    assert cmd[cmd.index("--config_file") + 1] == "configs/accelerate/fsdp.yaml"
    assert "--multi_gpu" not in cmd and "--main_process_port" not in cmd  # FSDP from the file


def test_accelerate_takes_the_command_and_the_shipped_fsdp_config(tmp_path):
    """accelerate's own parser and env builder accept what runner_command passes it."""
    launch = pytest.importorskip("accelerate.commands.launch")
    from accelerate.utils.launch import prepare_multi_gpu_env

    fsdp = Path(__file__).parents[1] / "configs" / "accelerate" / "fsdp.yaml"
    cfg = SweepConfig()
    cfg.executor.gpus_per_run, cfg.executor.accelerate_config = 4, str(fsdp)
    cmd = multigpu.runner_command(cfg.executor, tmp_path, LORA, port=29502)
    args, _, _ = launch._validate_launch_command(launch.launch_command_parser().parse_args(cmd[3:]))
    assert (args.use_fsdp, args.num_processes, args.main_process_port) == (True, 4, 29502)
    assert (args.module, args.training_script) == (True, "rankscope.runner")
    assert args.training_script_args == [str(tmp_path), LORA]
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"


def test_gpu_pool_hands_out_disjoint_gpus_and_takes_them_back():
    pool = multigpu.GpuPool(["0", "1", "2", "3", "4"])
    a, b = pool.take(2), pool.take(2)
    assert (a, b) == (["0", "1"], ["2", "3"])
    assert pool.take(2) is None  # one GPU left: the next 2-GPU run waits
    pool.give(a)
    assert pool.take(2) == ["0", "1"] and pool.free == ["4"]
    pool.give(b)
    assert pool.free == ["2", "3", "4"]


def test_more_gpus_per_run_than_visible_is_a_config_error(tmp_path):
    cfg = SweepConfig()
    cfg.executor.gpus_per_run = 2
    with pytest.raises(ConfigError, match="executor.gpus_per_run: 2 GPUs per run, but only 1"):
        multigpu.submit(cfg, tmp_path, [LORA], lambda r, e: None, devices=["0"])


@pytest.mark.slow
def test_multigpu_pins_each_run_to_its_gpus_and_gives_the_local_store(
    reference, tmp_path, cache_dir
):
    cfg = _cfg(tmp_path, cache_dir, "executor.gpus_per_run=1")
    write_sweep_file(cfg, tmp_path)
    store, seen = Store(tmp_path / STORE_NAME), {}

    def on_finished(run_id: str, error: str | None) -> None:
        seen[run_id] = error
        ingest_run(store, tmp_path / "runs" / run_id)

    # two fake GPUs (ids as CUDA_VISIBLE_DEVICES may give them) and a third run that fails
    multigpu.submit(cfg, tmp_path, [*RUN_IDS, "no-such-run"], on_finished, devices=["3", "5"])
    store.close()
    assert {r: seen[r] for r in RUN_IDS} == {r: None for r in RUN_IDS}
    assert "not in the sweep's plan" in seen["no-such-run"]
    assert str(tmp_path / "logs" / "no-such-run.log") in seen["no-such-run"]
    assert store_rows(tmp_path / STORE_NAME, exact=False) == reference[1]
    heads = {r: (tmp_path / "logs" / f"{r}.log").open().readline() for r in seen}
    gpus = {r: h.split("CUDA_VISIBLE_DEVICES=")[1].split()[0] for r, h in heads.items()}
    assert {gpus[r] for r in RUN_IDS} == {"3", "5"}  # the first two ran at once, one GPU each
    assert gpus["no-such-run"] in {"3", "5"}  # the third waited for a GPU to be free
    (s0, e0), (s1, e1) = (_span(tmp_path / "runs" / r) for r in RUN_IDS)
    assert s0 < e1 and s1 < e0


@pytest.mark.slow
def test_multigpu_fail_fast_stops_the_running_workers_cleanly(tmp_path, cache_dir, small_model_dir):
    from rankscope.executors import StopSweep

    # a long enough run (64 steps) that it is still training when the bad run fails
    cfg = _cfg(
        tmp_path,
        cache_dir,
        "tasks.max_train_items=128",
        "train.grad_accum=1",
        "executor.gpus_per_run=1",
    )
    write_sweep_file(cfg, tmp_path)

    def on_finished(run_id: str, error: str | None) -> None:
        # the bad run fails in seconds; stop once the good one is really training (a SIGINT
        # while a worker still imports is plain Python's KeyboardInterrupt, not our handler)
        progress, deadline = tmp_path / "runs" / LORA / "progress.json", time.monotonic() + 120
        while not progress.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        raise StopSweep(run_id)  # what the driver does with --fail-fast

    with pytest.raises(StopSweep, match="no-such-run"):
        multigpu.submit(cfg, tmp_path, [LORA, "no-such-run"], on_finished, devices=["0", "1"])
    rdir = tmp_path / "runs" / LORA
    assert not (rdir / "DONE").exists() and not (rdir / "RUNNING").exists()
    # the worker got one SIGINT and stopped at a safe point, saying how to resume
    assert "rerun to resume" in (tmp_path / "logs" / f"{LORA}.log").read_text()


def test_slurm_without_slurm_is_refused_not_run_locally(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun here
    cfg = SweepConfig()
    cfg.executor.kind = "slurm"
    with pytest.raises(ConfigError, match="executor.slurm_cluster: local"):
        slurm.submit(cfg, tmp_path, [LORA], lambda r, e: None)
    cfg.executor.slurm_cluster = "lcoal"
    with pytest.raises(ConfigError, match="'lcoal' is not one of slurm, local, debug"):
        slurm.submit(cfg, tmp_path, [LORA], lambda r, e: None)
    assert not (tmp_path / "slurm").exists()  # nothing submitted, nothing written


def test_sbatch_script_carries_the_executor_settings(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"  # a stand-in srun, so that submitit takes this for a Slurm host
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    cfg = SweepConfig(name="paper")
    e = cfg.executor
    e.kind, e.gpus_per_run, e.cpus_per_run, e.max_retries = "slurm", 2, 8, 3
    e.slurm_partition, e.slurm_time_min, e.slurm_array_parallelism = "gpu", 90, 5
    executor = slurm.make_executor(cfg, tmp_path)._executor
    assert type(executor).__name__ == "SlurmExecutor" and executor.max_num_timeout == 3
    assert executor.parameters["array_parallelism"] == 5
    script = executor._make_submission_file_text("python -m submitit.core._submit", "x")
    for line in (
        "--gpus-per-node=2",
        "--cpus-per-task=8",
        "--partition=gpu",
        "--time=90",
        "--job-name=rankscope-paper",
        "--ntasks-per-node=1",
        "--signal=USR2@",  # the warning before preemption / time-out that triggers requeue
    ):
        assert f"#SBATCH {line}" in script
    assert str(tmp_path / "slurm") in script  # logs in the sweep's slurm/ folder
