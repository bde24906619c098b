"""One driver per output directory: a second driver on a directory a live driver holds is
refused naming the host and pid, a stale lock is taken over, another host's lock is respected,
and the lock goes away with its driver, however that ends."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from helpers import call_cli

from rankscope.errors import SweepBusy
from rankscope.sweeplock import LOCK_NAME, acquire, hold


def write_lock(
    out: Path,
    pid: int,
    host: str | None = None,
    started: float | None = None,
    command: str = "rankscope run sweep.yaml",
) -> Path:
    """A LOCK as another driver would have written it."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    holder = {
        "host": host or socket.gethostname(),
        "pid": pid,
        "started": time.time() if started is None else started,
        "command": command,
    }
    path.write_text(json.dumps(holder))
    return path


def dead_pid() -> int:
    """The pid of a process that has exited (and was reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def live_pid():
    """The pid of a process that runs for the test (another driver, as far as LOCK knows)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield p.pid
    p.kill()
    p.wait()


def test_second_run_is_refused_naming_host_and_pid(monkeypatch, capsys, tmp_path, live_pid):
    out = tmp_path / "out"
    command = f"rankscope run --set tasks.train=[toy-arith] -o {out}"  # brackets: no markup
    lock = write_lock(out, live_pid, command=command)
    before = lock.read_text()
    code, text = call_cli(
        monkeypatch, capsys, "run", "--set", "methods.lora.ranks=[8]", "-o", str(out)
    )
    assert code == 2, text
    needles = (str(out), f"pid {live_pid}", socket.gethostname(), "wait for it", "kill", command)
    for needle in needles:
        assert needle in text, text
    assert "Traceback" not in text
    assert [p.name for p in out.iterdir()] == [LOCK_NAME], "a refused driver writes nothing"
    assert lock.read_text() == before


@pytest.mark.parametrize("command", ["analyze", "reindex"])
def test_analyze_and_reindex_are_refused_too(monkeypatch, capsys, tmp_path, live_pid, command):
    from rankscope.config import load_config
    from rankscope.rundir import STORE_NAME
    from rankscope.store import Store
    from rankscope.sweep import write_sweep_file

    out = tmp_path / "out"
    out.mkdir()
    Store(out / STORE_NAME).close()
    write_sweep_file(load_config(None, [f"output_dir={out}"]), out)
    write_lock(out, live_pid)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    args = ["analyze", "-o", str(out)] if command == "analyze" else ["reindex", str(out)]
    code, text = call_cli(monkeypatch, capsys, *args)
    assert code == 2 and f"pid {live_pid}" in text and "Traceback" not in text, text
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_stale_lock_is_taken_over_and_released(tmp_path):
    pid = dead_pid()
    lock = write_lock(tmp_path, pid)
    with hold(tmp_path) as held:
        assert held.took_over is not None and held.took_over.pid == pid
        assert json.loads(lock.read_text())["pid"] == held.holder.pid
    assert not lock.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing left aside


def test_reused_pid_is_stale(tmp_path):
    """A lock naming a running pid that started after the lock was written (a restarted
    container's driver gets pid 1 again) is stale: this very process serves as that pid."""
    import os

    write_lock(tmp_path, os.getpid(), started=time.time() - 10 * 86400)
    with hold(tmp_path) as held:
        assert held.took_over is not None


def test_lock_of_another_host_is_respected(tmp_path):
    lock = write_lock(tmp_path, dead_pid(), host="gpu-node-17.cluster")
    before = lock.read_text()
    with pytest.raises(SweepBusy) as ex:
        acquire(tmp_path)
    msg = str(ex.value)
    assert "host gpu-node-17.cluster" in msg and f"delete {lock}" in msg, msg
    assert lock.read_text() == before


def test_garbled_lock_is_refused_naming_the_file(tmp_path):
    lock = tmp_path / LOCK_NAME
    lock.write_text("{not json")
    with pytest.raises(SweepBusy) as ex:
        acquire(tmp_path)
    assert f"{lock}: unreadable lock file" in str(ex.value) and f"delete {lock}" in str(ex.value)
    assert lock.read_text() == "{not json"


def race_threads(out: Path, n: int = 6) -> list:
    """n threads acquire at once (released by the caller): a SweepLock or SweepBusy each."""
    barrier, results = threading.Barrier(n), []

    def racer() -> None:
        barrier.wait()
        try:
            results.append(acquire(out))
        except SweepBusy as e:
            results.append(e)

    threads = [threading.Thread(target=racer) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "stale-lock"])
def test_racing_threads_only_one_wins(tmp_path, stale):
    for attempt in range(10):
        out = tmp_path / str(attempt)
        out.mkdir()
        if stale:
            write_lock(out, dead_pid())
        results = race_threads(out)
        won = [r for r in results if not isinstance(r, SweepBusy)]
        assert len(won) == 1, results
        won[0].release()
        assert [p.name for p in out.iterdir()] == []


RACER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from rankscope.errors import SweepBusy
    from rankscope.sweeplock import acquire

    out, go = Path(sys.argv[1]), Path(sys.argv[2])
    while not go.exists():
        time.sleep(0.001)
    try:
        lock = acquire(out)
    except SweepBusy:
        print("busy")
    else:
        print("won")
        time.sleep(1.0)  # hold it while the others look
        lock.release()
    """
)


def test_racing_processes_over_a_stale_lock_only_one_wins(tmp_path):
    out, go = tmp_path / "out", tmp_path / "go"
    write_lock(out, dead_pid())
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(out), str(go)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    time.sleep(0.5)  # all started and polling
    go.touch()
    said = sorted(p.communicate(timeout=60)[0].strip() for p in racers)
    assert said == ["busy", "busy", "busy", "won"]
    assert [p.name for p in out.iterdir()] == []


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_released_after_an_exception(tmp_path, exc):
    with pytest.raises(exc), hold(tmp_path):
        assert (tmp_path / LOCK_NAME).exists()
        raise exc("stop")
    assert not (tmp_path / LOCK_NAME).exists()
    with hold(tmp_path) as again:  # and can be taken again, with no takeover
        assert again.took_over is None


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path, live_pid):
    with hold(tmp_path):
        (tmp_path / LOCK_NAME).unlink()  # deleted by hand, and another driver took it
        lock = write_lock(tmp_path, live_pid)
    assert json.loads(lock.read_text())["pid"] == live_pid
