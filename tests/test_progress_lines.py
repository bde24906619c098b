"""Progress a batch job can read: with output to a file or a pipe (Slurm, nohup, CI) a sweep
logs one plain line per run start, finish and failure, with elapsed time and an ETA; on a
terminal it keeps its rich bars."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from helpers import run_cli
from rich.console import Console

from rankscope import progress
from rankscope.progress import plain_stages, stages_for

CLOCK = r"\d+:\d\d:\d\d"


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """The time the progress module reads: a test sets now[0]."""
    now = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    return now


def _plain_console() -> Console:
    return Console(file=io.StringIO(), force_terminal=False, width=40)


def test_plain_lines_per_run_start_finish_and_failure_with_elapsed_and_eta(clock):
    console = _plain_console()
    with plain_stages(console) as stages:
        stages.start("train", 3)  # 3 runs to do
        clock[0] += 5  # e.g. the base model build: no run's time
        stages.run_start("toy-med__lora-r8__s0")
        stages.step("train toy-med__lora-r8__s0", 1, 10)  # per step: nothing
        stages.advance("train", 1)  # per run's stage: nothing (the run lines say it)
        clock[0] += 14.2
        stages.run_end("toy-med__lora-r8__s0", None)
        stages.run_start("toy-legal__full__s0")
        stages.note("[yellow]toy-legal__full__s0[/yellow]: retrying with a smaller batch")
        clock[0] += 3.1
        stages.run_end("toy-legal__full__s0", "CUDA out of memory\n(log: runs/x/error.txt)")
        stages.run_start("base")
        clock[0] += 100
        stages.run_end("base", None)
    lines = console.file.getvalue().splitlines()
    assert lines == [
        "train: 3 to do | elapsed 0:00:00",
        "[1/3] start  toy-med__lora-r8__s0 | elapsed 0:00:05, eta ?",
        "[1/3] done   toy-med__lora-r8__s0 14.2 s | elapsed 0:00:19, eta 0:00:28",
        "[2/3] start  toy-legal__full__s0 | elapsed 0:00:19, eta 0:00:28",
        "toy-legal__full__s0: retrying with a smaller batch",
        "[2/3] FAILED toy-legal__full__s0 3.1 s: CUDA out of memory (log: runs/x/error.txt) "
        "| elapsed 0:00:22, eta 0:00:08",
        "[3/3] start  base | elapsed 0:00:22, eta 0:00:08",
        "[3/3] done   base 0:01:40 | elapsed 0:02:02, eta 0:00:00",
    ]  # a line each, not wrapped at 40 columns; eta: time per finished run x runs left
    assert "\x1b" not in console.file.getvalue()


def test_plain_lines_say_submitted_for_a_queue_and_count_a_stage_in_tenths(clock):
    console = _plain_console()
    with plain_stages(console) as stages:
        stages.start("build toy base model", 20)
        for _ in range(20):
            clock[0] += 1
            stages.advance("build toy base model", 1)
        stages.start("train", 2)
        stages.run_submitted("base")
        stages.run_submitted("toy-arith__full__s0")
        clock[0] += 60
        stages.run_end("base", None)
    lines = console.file.getvalue().splitlines()
    tenths = [x for x in lines if x.startswith("build toy base model: ") and "%" in x]
    assert len(tenths) == 10
    assert tenths[0] == "build toy base model: 10 % (2/20) | elapsed 0:00:02, eta 0:00:18"
    assert tenths[-1] == "build toy base model: 100 % (20/20) | elapsed 0:00:20, eta 0:00:00"
    assert lines[-3:] == [
        "[1/2] submitted base | elapsed 0:00:20, eta ?",
        "[2/2] submitted toy-arith__full__s0 | elapsed 0:00:20, eta ?",
        "[1/2] done   base | elapsed 0:01:20, eta 0:01:00",  # no run time: queued, not started
    ]


def test_stages_for_bars_on_a_terminal_plain_lines_elsewhere(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    for key in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(key, raising=False)

    def events(console: Console) -> str:
        with stages_for(console) as stages:
            stages.start("train", 2)
            stages.run_start("base")
            stages.advance("train", 1)
            stages.run_end("base", None)
            stages.run_start("toy-arith__full__s0")
            stages.run_end("toy-arith__full__s0", "boom")
        return console.file.getvalue()

    bars = events(Console(file=io.StringIO(), force_terminal=True, width=120))
    assert "\x1b[" in bars and "━" in bars  # rich redraws its bars
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", bars)  # what the terminal shows
    assert "failed toy-arith__full__s0: boom" in shown  # a failure's reason, as before
    assert "[1/2] start" not in bars
    plain = events(Console(file=io.StringIO(), force_terminal=False, width=120))
    assert "\x1b" not in plain and "━" not in plain
    assert re.search(rf"^\[1/2\] start  base \| elapsed {CLOCK}, eta \?$", plain, re.M)
    assert re.search(r"^\[2/2\] FAILED toy-arith__full__s0 [\d.]+ s: boom \|", plain, re.M)
    monkeypatch.setenv("TERM", "dumb")  # a terminal that cannot redraw: lines too
    dumb = events(Console(file=io.StringIO(), force_terminal=True, width=120))
    assert "[1/2] start  base" in dumb


@pytest.mark.parametrize("workers", [1, 2])  # in-process, and the pool of worker processes
def test_rankscope_run_into_a_pipe_logs_each_run_start_and_finish(
    tmp_path: Path, cache_dir: Path, small_model_dir: Path, workers: int
):
    sets = [
        "model.world=small",
        "seeds=[0]",
        f"model.cache_dir={cache_dir}",
        "tasks.train=[toy-arith]",
        "tasks.eval=[toy-arith, toy-general]",
        "tasks.max_train_items=16",
        "tasks.max_eval_items=8",
        "methods.full.enabled=false",
        "methods.lora.ranks=[4]",
        "methods.lora.lr=5e-4",
        "analysis.enabled=false",
        "train.epochs=1",
        "executor.gpus_per_run=0",
        f"executor.cpu_workers={workers}",
    ]
    res = run_cli(  # stderr is a pipe, as in a batch job: not a terminal
        "run",
        "-o",
        str(tmp_path / "out"),
        *(x for s in sets for x in ("-s", s)),
        env={"FORCE_COLOR": None, "TTY_COMPATIBLE": None, "RANKSCOPE_CACHE": str(cache_dir)},
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    log = res.stderr
    assert "\x1b" not in log and "━" not in log
    for run_id in ("base", "toy-arith__lora-r4-a8-lr5e-4__s0"):
        start = re.search(rf"^\[[12]/2\] start  {run_id} \| elapsed {CLOCK}, eta ", log, re.M)
        took = rf"([\d.]+ s|{CLOCK})"
        done = re.search(
            rf"^\[[12]/2\] done   {run_id} {took} \| elapsed {CLOCK}, eta {CLOCK}$", log, re.M
        )
        assert start and done and start.start() < done.start(), log
    assert re.search(r"^\[2/2\] done .* eta 0:00:00$", log, re.M), log
    assert "2 run(s) done now" in log
