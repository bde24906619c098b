"""Multi-process training: 2 CPU processes (gloo) give the loss curve of 1 process.

Both runs go through the worker entry a multi-GPU run uses (`python -m rankscope.runner`,
under torchrun): full SFT of the small world's base model, 2 processes with a per-device batch
of b against 1 process with 2b, so the effective batch and the data order are the same. The
Trainer averages the loss over the tokens of all processes, so the two curves must agree to
float precision, and so must what rank 0 then saves and evaluates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_configs import small_sweep

from rankscope.sweep import write_sweep_file

ITEMS = 32  # training items: 8 optimizer steps at an effective batch of 4
RUN = "toy-arith__full-lr3e-3__s0"


def _run(n_proc: int, batch: int, out: Path, cache_dir: Path) -> Path:
    cfg = small_sweep(
        out,
        cache_dir,
        f"tasks.max_train_items={ITEMS}",
        "tasks.eval=[toy-general]",
        "tasks.max_eval_items=16",
        "methods.lora.enabled=false",
        "methods.base=false",
        "train.epochs=1",
        f"train.batch_size={batch}",
        "train.grad_accum=1",
        "train.warmup_ratio=0",
        "train.logging_steps=1",
        "train.precision=fp32",
        "analysis.enabled=false",
    )
    write_sweep_file(cfg, out)
    # torchrun, not `accelerate launch --cpu`: accelerate starts several CPU processes only
    # through mpirun; the Trainer inside sets up its accelerate state (gloo on CPU) either way
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc_per_node", str(n_proc), "-m", "rankscope.runner", str(out), RUN]
    env = dict(os.environ, OMP_NUM_THREADS="1", RANKSCOPE_CACHE=str(cache_dir))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "runs" / RUN


def _log(rdir: Path) -> list[dict]:
    return [json.loads(x) for x in (rdir / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_effective_batch(
    tmp_path, cache_dir, small_model_dir
):
    # small_model_dir: the base model is built once, before two processes would race to build it
    one = _run(1, 4, tmp_path / "one", cache_dir)
    two = _run(2, 2, tmp_path / "two", cache_dir)
    log1, log2 = _log(one), _log(two)
    # 8 optimizer steps on both sides: with batch 2, only 2 processes make an effective 4
    assert [r["step"] for r in log1] == [r["step"] for r in log2] == list(range(1, 9))
    loss1, loss2 = [r["loss"] for r in log1], [r["loss"] for r in log2]
    assert loss2 == pytest.approx(loss1, rel=1e-4, abs=1e-5)
    assert loss1[-1] < loss1[0] - 1  # it trained: a curve, not a constant
    assert [r["lr"] for r in log2] == pytest.approx([r["lr"] for r in log1])
    # rank 0 alone wrote the run: one DONE, the saved model, the same evaluation
    for rdir in (one, two):
        assert (rdir / "DONE").is_file() and (rdir / "model" / "model.safetensors").is_file()
    eval1, eval2 = (json.loads((r / "eval" / "toy-general.json").read_text()) for r in (one, two))
    assert eval2["metrics"].keys() == eval1["metrics"].keys()
    for metric, value in eval1["metrics"].items():  # log-probs and KL: float sums, not counts
        continuous = metric in ("gold_logprob", "kl_base")
        assert eval2["metrics"][metric] == pytest.approx(value, abs=1e-4 if continuous else 1e-12)
    preds1, preds2 = eval1["predictions"], eval2["predictions"]
    assert [p["pred"] for p in preds2] == [p["pred"] for p in preds1]
    logprobs1 = [x for p in preds1 for x in p["detail"]["logprobs"]]  # the trained weights
    logprobs2 = [x for p in preds2 for x in p["detail"]["logprobs"]]
    assert logprobs2 == pytest.approx(logprobs1, abs=1e-3)
