"""Crash safety: `rankscope run` killed (SIGKILL) or interrupted (Ctrl-C) resumes to the same store.

The sweep runs in a subprocess. RANKSCOPE_TEST_KILL_AT=<point>:<n> makes it SIGKILL itself at
the n-th pass through a named point: `checkpoint` (a Trainer checkpoint was just saved),
`step` (an optimizer step ended), `eval` (an evaluation batch), `store` (inside the ingest
transaction, before COMMIT), `file` (an atomic write, between temp file and rename).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import run_cli, store_rows

from rankscope.rundir import STORE_NAME

FULL, LORA = "toy-arith__full-lr1e-3__s0", "toy-arith__lora-r4-a8-lr3e-3__s0"


def _args(out: Path, cache_dir: Path, *extra: str) -> list[str]:
    sets = [
        "name=crash",
        f"model.cache_dir={cache_dir}",
        "model.world=small",
        "seeds=[0]",
        "tasks.train=[toy-arith]",
        "tasks.eval=[toy-arith, toy-general]",
        "tasks.max_train_items=48",
        "tasks.max_eval_items=24",
        "methods.base=false",
        "methods.full.lr=1e-3",
        "methods.lora.ranks=[4]",
        "methods.lora.lr=3e-3",
        "train.epochs=1",
        "train.batch_size=4",
        "train.grad_accum=1",
        "train.logging_steps=1",
        "train.save_steps=4",  # 12 steps: checkpoints at 4, 8 (and 12)
        "eval.batch_size=8",
        "eval.max_new_tokens=16",
        "analysis.probe_items=8",
        "analysis.ablation_items=8",
        "executor.cpu_workers=1",  # in-process crash points (the pool's: test_executors)
        *extra,
    ]
    return ["run", "-o", str(out), *(x for s in sets for x in ("--set", s))]


def _env(kill_at: str | None = None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("RANKSCOPE_TEST_KILL_AT", None)
    if kill_at:
        env["RANKSCOPE_TEST_KILL_AT"] = kill_at
    return env


def rankscope(args: list[str], kill_at: str | None = None) -> subprocess.CompletedProcess:
    """The CLI in a subprocess; `kill_at` arms the crash point (None: none, even if set here)."""
    return run_cli(*args, env={"OMP_NUM_THREADS": "1", "RANKSCOPE_TEST_KILL_AT": kill_at})


def leftovers(out: Path) -> list[str]:
    names = ("*.tmp", "trainer", "RUNNING", "progress.json", "error.txt")
    return sorted(str(p.relative_to(out)) for n in names for p in out.rglob(n))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir, small_model_dir) -> dict[str, list[tuple]]:
    out = tmp_path_factory.mktemp("reference")
    res = rankscope(_args(out, cache_dir))
    assert res.returncode == 0, res.stderr
    return store_rows(out / STORE_NAME)


def _killed(out: Path, cache_dir: Path, point: str) -> None:
    res = rankscope(_args(out, cache_dir), kill_at=point)
    assert res.returncode == -signal.SIGKILL, (point, res.returncode, res.stderr[-2000:])


@pytest.mark.slow
def test_sigkill_at_every_point_then_rerun_gives_the_uninterrupted_store(
    tmp_path, cache_dir, reference
):
    out, full = tmp_path / "out", tmp_path / "out" / "runs" / FULL
    _killed(out, cache_dir, "checkpoint:2")  # just after checkpoint-8 of the full run
    assert (full / "trainer" / "checkpoint-8" / "COMPLETE").exists()
    assert not (full / "TRAINED").exists()
    _killed(out, cache_dir, "step:2")  # resumed at 8, killed at step 10: checkpoint-8 is newest
    ckpts = sorted(p.name for p in (full / "trainer").glob("checkpoint-*"))
    assert ckpts == ["checkpoint-4", "checkpoint-8"]  # bounded: save_total_limit
    _killed(out, cache_dir, "eval:2")  # resumed at 8, trained, killed in the 1st task's eval
    assert json.loads((full / "TRAINED").read_text())["resumed_from_step"] == 8
    assert not list(full.glob("eval/*.json"))
    _killed(out, cache_dir, "store:2")  # inside an ingest transaction
    store_rows(out / STORE_NAME)  # the store is consistent (integrity check) after a kill mid-write
    _killed(out, cache_dir, "file:2")  # between a temp file and its rename
    assert list(out.rglob("*.tmp"))
    res = rankscope(_args(out, cache_dir))
    assert res.returncode == 0, res.stderr
    assert leftovers(out) == []
    got = store_rows(out / STORE_NAME)
    assert got == reference  # same runs, metrics, per-item predictions; no duplicate rows
    tested = [p for p in got["predictions"] if p[2] == "test"]  # (run_id, task, split, ...)
    assert len(tested) == 2 * 2 * 24  # and each run's validation items of toy-arith
    assert {p[:3] for p in got["predictions"] if p[2] == "val"} == {
        (r, "toy-arith", "val") for r in (FULL, LORA)
    }


@pytest.mark.slow
def test_store_deleted_then_reindexed_is_equal(tmp_path, cache_dir, reference):
    out = tmp_path / "out"
    assert rankscope(_args(out, cache_dir)).returncode == 0
    for suffix in ("", "-wal", "-shm"):
        Path(f"{out / 'results.sqlite'}{suffix}").unlink(missing_ok=True)
    res = rankscope(["reindex", str(out)])
    assert res.returncode == 0, res.stderr
    assert store_rows(out / STORE_NAME) == reference
    res = rankscope(["status", str(out)])
    assert res.returncode == 0 and res.stdout.count(" done ") == 2, res.stdout


LONG = ("tasks.max_train_items=96", "train.epochs=8", "train.save_steps=0")  # 192 steps


def _start_and_wait_for_training(out: Path, cache_dir: Path) -> subprocess.Popen:
    """A sweep long enough to interrupt (192 steps, no periodic checkpoint), once training."""
    args = _args(out, cache_dir, *LONG)
    cmd = [sys.executable, "-m", "rankscope.cli", *args]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=_env())
    progress = out / "runs" / FULL / "progress.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads(progress.read_text())["step"] >= 1:
                return proc
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"training never started: {proc.stderr.read().decode()[-2000:]}")


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_stops_cleanly_and_resumes(tmp_path, cache_dir, small_model_dir):
    out, full = tmp_path / "out", tmp_path / "out" / "runs" / FULL
    proc = _start_and_wait_for_training(out, cache_dir)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    err = " ".join(err.decode().split())
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted; rerun to resume" in err and "Traceback" not in err
    (ckpt,) = (full / "trainer").glob("checkpoint-*")  # saved at the step after Ctrl-C
    assert (ckpt / "COMPLETE").exists() and not (full / "TRAINED").exists()
    stopped_at = int(ckpt.name.split("-")[1])
    assert 1 <= stopped_at < 192
    conn = sqlite3.connect(out / "results.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    (status,) = conn.execute("SELECT status FROM runs WHERE run_id=?", (FULL,)).fetchone()
    assert status == "interrupted"
    conn.close()
    res = rankscope(_args(out, cache_dir, *LONG))
    assert res.returncode == 0, res.stderr
    assert json.loads((full / "TRAINED").read_text())["resumed_from_step"] == stopped_at
    assert leftovers(out) == []


@pytest.mark.slow
def test_second_ctrl_c_stops_at_once(tmp_path, cache_dir, small_model_dir):
    out = tmp_path / "out"
    proc = _start_and_wait_for_training(out, cache_dir)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()[-2000:]
    store_rows(out / STORE_NAME)  # asserts SQLite's integrity check


def test_sigint_handler_defers_the_first_and_raises_on_the_second():
    from rankscope.interrupts import STOP, _on_sigint, deferred_interrupts

    STOP.requested = False
    with pytest.raises(KeyboardInterrupt):  # outside a deferring section: at once
        _on_sigint(signal.SIGINT, None)
    with deferred_interrupts():
        _on_sigint(signal.SIGINT, None)  # first: only asks for a stop
        assert STOP.requested
        with pytest.raises(KeyboardInterrupt):  # second: at once
            _on_sigint(signal.SIGINT, None)
    STOP.requested = False


def _runner(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "rankscope.runner", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)


def test_runner_module_runs_one_unit_and_reports_bad_input(tmp_path, cache_dir, small_model_dir):
    from sweep_configs import small_sweep

    from rankscope.sweep import write_sweep_file

    out = tmp_path / "sweep"
    res = _runner(str(out), "base")
    assert res.returncode == 2 and "sweep.yaml: not found" in res.stderr
    cfg = small_sweep(out, cache_dir, "tasks.max_eval_items=8", "analysis.enabled=false")
    write_sweep_file(cfg, out)
    res = _runner(str(out), "no-such-run")
    assert res.returncode == 2 and "not in the sweep's plan" in res.stderr
    res = _runner(str(out), "base")
    assert res.returncode == 0, res.stderr
    rdir = out / "runs" / "base"
    assert sorted(p.name for p in rdir.glob("eval/*.json")) == [
        f"{t}.json" for t in sorted(cfg.tasks.eval)
    ]
    done = (rdir / "DONE").stat().st_mtime_ns
    assert _runner(str(out), "base").returncode == 0  # idempotent: DONE holds the hash
    assert (rdir / "DONE").stat().st_mtime_ns == done
    assert not (out / "results.sqlite").exists()  # a worker never writes the store
