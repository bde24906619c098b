"""The results store as the driver fills it: ingest run dirs idempotently, rebuild from them."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from helpers import store_rows
from sweep_configs import small_sweep

from rankscope.pipeline import reindex_sweep, run_sweep
from rankscope.rundir import STORE_NAME, RunState
from rankscope.store import Store, ingest_run


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, cache_dir, small_model_dir) -> Path:
    """A real, small finished sweep: base + one LoRA run, evaluated on two tasks, analysed."""
    out = tmp_path_factory.mktemp("sweep")
    cfg = small_sweep(
        out,
        cache_dir,
        "tasks.max_train_items=16",
        "tasks.max_eval_items=8",
        "tasks.eval=[toy-arith, toy-general]",
        "methods.full.enabled=false",
        "methods.lora.ranks=[4]",
        "train.epochs=1",
        "analysis.attention=false",
    )
    outcome = run_sweep(cfg, report=False)
    assert len(outcome.done) == 2 and not outcome.failed
    return out


def test_ingesting_twice_changes_nothing(sweep_dir, tmp_path):
    before = store_rows(sweep_dir / STORE_NAME, timings=True)
    assert before["metrics"] and before["predictions"] and before["analysis"]
    copy = tmp_path / STORE_NAME
    shutil.copy(sweep_dir / STORE_NAME, copy)
    store = Store(copy)
    for rdir in sorted((sweep_dir / "runs").iterdir()):
        ingest_run(store, rdir)
        ingest_run(store, rdir)
    store.close()
    assert store_rows(copy, timings=True, sweep=sweep_dir) == before


def test_a_rewritten_unit_replaces_its_rows(sweep_dir, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(sweep_dir, out)
    rdir = out / "runs" / "base"
    path = rdir / "eval" / "toy-general.json"
    doc = json.loads(path.read_text())
    doc["predictions"] = doc["predictions"][:3]  # a unit redone with fewer items
    path.write_text(json.dumps(doc))
    os.utime(path, ns=(1, 1))  # a different signature, whatever the clock
    store = Store(out / STORE_NAME)
    ingest_run(store, rdir)
    assert len(store.predictions("base", "toy-general")) == 3
    store.close()


def test_store_deleted_then_reindexed_has_equal_content(sweep_dir, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(sweep_dir, out)
    before = store_rows(out / STORE_NAME, timings=True, sweep=sweep_dir)  # paths: the original dir
    for suffix in ("", "-wal", "-shm"):
        Path(f"{out / STORE_NAME}{suffix}").unlink(missing_ok=True)
    assert reindex_sweep(out) == 2
    assert store_rows(out / STORE_NAME, timings=True) == before
    assert reindex_sweep(out) == 2  # over an existing store: the same again
    assert store_rows(out / STORE_NAME, timings=True) == before


def test_two_runs_finishing_at_the_same_moment(sweep_dir, tmp_path):
    """Two drivers' threads ingest at once: transactions serialise, nothing lost or doubled."""
    out = tmp_path / "sweep"
    shutil.copytree(sweep_dir, out)
    before = store_rows(out / STORE_NAME, timings=True, sweep=sweep_dir)  # paths: the original dir
    (out / STORE_NAME).unlink()
    Store(out / STORE_NAME).close()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def ingest(run_id: str) -> None:
        store = Store(out / STORE_NAME)  # its own connection
        try:
            barrier.wait()
            ingest_run(store, out / "runs" / run_id)
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)
        finally:
            store.close()

    runs = ("base", "toy-arith__lora-r4-a8-lr3e-3__s0")
    threads = [threading.Thread(target=ingest, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    got = store_rows(out / STORE_NAME, timings=True)
    for table in ("runs", "metrics", "predictions", "train_log"):
        assert got[table] == before[table]
    assert got["analysis"] == before["analysis"]
    # fits are the driver's cross-run step, made after ingestion
    assert before["fits"] and not got["fits"]


def test_a_failed_transaction_leaves_nothing(tmp_path):
    store = Store(tmp_path / STORE_NAME)
    with pytest.raises(RuntimeError), store.transaction():
        store.save_eval("r", "t", {"acc": (1.0, 0.0, 1)}, [])
        with store.transaction():  # a nested one joins the outer
            store.set_meta({"k": "v"})
        raise RuntimeError("killed mid-unit")
    assert store.metrics() == [] and store.get_meta("k") is None
    store.close()


def test_a_store_from_before_the_fits_table_moves_its_fits_there(tmp_path):
    """Older stores kept fits as `analysis` rows of kind spectral_fit whose run_id column held
    the train task; opening one moves them into `fits`, once."""
    path = tmp_path / STORE_NAME
    old = Store(path)
    old.conn.execute("PRAGMA user_version = 0")  # as written before the fits table
    old.upsert_run(run_id="r", model="toy", method="lora", config_hash="h", status="done")
    old.update_run("r", variant="dora")
    old.save_analysis(
        [
            ("toy-med", "spectral_fit", "all", -1, -1, "log_a", 0.5),
            ("r", "spectral", "m.q_proj", 0, -1, "fro", 1.0),
        ]
    )
    old.close()
    store = Store(path)
    assert store.fits() == [
        {
            "train_task": "toy-med",
            "method": "lora",
            "variant": "dora",
            "module": "all",
            "metric": "log_a",
            "value": 0.5,
        }
    ]
    assert [r["kind"] for r in store.analysis()] == ["spectral"]
    store.close()


def test_run_states_read_as_their_words():
    """The store, `status` and `plan` show the same words the three old vocabularies did."""
    assert [str(s) for s in RunState] == [
        "pending",
        "running",
        "interrupted",
        "failed",
        "done",
        "stale",
        "changed",
        "stopped",
    ]  # fmt: skip  ("stopped": a run successive halving stopped at a rung)
    assert f"{RunState.DONE:>6}" == "  done" and RunState.DONE == "done"
