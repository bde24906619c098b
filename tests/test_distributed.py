"""Multi-process training: 2 CPU processes (gloo) give the loss curve of 1 process.

Both trainings go through rankscope's own train path (`rankscope.train.train`, i.e. the
Trainer as the sweep uses it) under torchrun: 2 processes with a per-device
batch of b against 1 process with 2b, so the effective batch and the data order are the same.
The Trainer averages the loss over the tokens of all processes, so the two curves must agree
to float precision. This file is also the script the launcher runs (see `__main__`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

STEPS_ITEMS = 32  # training items: 8 optimizer steps at an effective batch of 4


def _config(cache_dir: str, batch: int):
    from conftest import small_sweep

    return small_sweep(
        Path("unused"),
        Path(cache_dir),
        f"tasks.max_train_items={STEPS_ITEMS}",
        "methods.lora.enabled=false",
        "methods.base=false",
        "train.epochs=1",
        f"train.batch_size={batch}",
        "train.grad_accum=1",
        "train.warmup_ratio=0",
        "train.logging_steps=1",
        "train.precision=fp32",
    )


def _train_and_log(cache_dir: str, batch: int, out: Path) -> None:
    """Run under the launcher: fine-tune the small world's base model, rank 0 writes the log."""
    from rankscope.methods import METHODS, load_base
    from rankscope.pipeline import task_context
    from rankscope.plan import make_plan
    from rankscope.tasks import TASKS
    from rankscope.train import train

    cfg = _config(cache_dir, batch)
    (run,) = make_plan(cfg)
    items = TASKS[run.train_task].items("train", task_context(cfg), cfg.tasks.max_train_items)
    base, tok, _ = load_base(cfg.model)
    model = METHODS[run.method].prepare(base, run, cfg)
    rec = train(model, tok, items, cfg, run.lr, run.seed, out.parent / f"work{batch}")
    if int(os.environ.get("RANK", "0")) == 0:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        out.write_text(json.dumps({"world_size": world, "log": rec["log"]}))


def _launch(n_proc: int, batch: int, cache_dir: Path, out: Path) -> dict:
    # torchrun, not `accelerate launch --cpu`: accelerate starts several CPU processes only
    # through mpirun; the Trainer inside sets up its accelerate state (gloo on CPU) either way
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(n_proc),
        __file__,
        str(cache_dir),
        str(batch),
        str(out),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", RANKSCOPE_CACHE=str(cache_dir))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_effective_batch(
    tmp_path, cache_dir, small_model_dir
):
    # small_model_dir: the base model is built once, before two processes would race to build it
    one = _launch(1, 4, cache_dir, tmp_path / "one.json")
    two = _launch(2, 2, cache_dir, tmp_path / "two.json")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    steps = STEPS_ITEMS // 4
    assert [r["step"] for r in one["log"]] == list(range(1, steps + 1))
    assert [r["step"] for r in two["log"]] == [r["step"] for r in one["log"]]
    loss1 = [r["loss"] for r in one["log"]]
    loss2 = [r["loss"] for r in two["log"]]
    assert loss2 == pytest.approx(loss1, rel=1e-4, abs=1e-5)
    assert loss1[-1] < loss1[0]  # it trained: the curve is a curve, not a constant
    # lr schedule: same step count and schedule on both sides
    assert [r["lr"] for r in two["log"]] == pytest.approx([r["lr"] for r in one["log"]])


if __name__ == "__main__":
    _train_and_log(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
