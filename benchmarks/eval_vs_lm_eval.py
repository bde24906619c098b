"""rankscope's MCQ evaluation vs lm-evaluation-harness 0.4.13: wall time and per-item agreement.

The same tiny Llama (built here with the test suite's builder: byte-level BPE tokenizer
trained on the items; random init unless --steps) and the same MMLU items go through both in
one run:

- rankscope: `AutoModelForCausalLM.from_pretrained` + `evaluate()`;
- lm-eval: `HFLM(pretrained=dir)` + `simple_evaluate` on a task whose docs are the same
  items (the config of tests/test_lm_eval_agreement.py), no request cache.

Both times include loading the model; imports are done before either clock starts. lm-eval is
timed twice: as a user runs it (simple_evaluate builds a TaskManager, which indexes every task
YAML file of the harness) and with that index built beforehand. Items come from
../shared/data/mmlu when present (else the test fixtures), spread evenly over subjects.

    OMP_NUM_THREADS=1 python benchmarks/eval_vs_lm_eval.py --items 200 --batch-size 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny-model builder lives with the tests

from test_lm_eval_agreement import (  # noqa: E402
    build_tiny_lm,
    harness_mcq_config,
    load,
    run_harness,
)

SIZES = {"tiny": (64, 2), "small": (256, 4), "medium": (512, 8)}
"""--model-size -> (hidden size, layers)."""


def mmlu_items(data_dir: Path, n: int) -> list:
    """n MMLU test items spread evenly over the subjects found in data_dir."""
    from rankscope.config import DataConfig
    from rankscope.tasks import TASKS, TaskContext

    ctx = TaskContext(data=DataConfig(source="files", dir=str(data_dir)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "only k of 57 subjects found"
        items = TASKS["mmlu"].items("test", ctx)
    step = max(1, len(items) // n)
    return items[::step][:n]


def time_rankscope(model_dir: Path, items: list, batch: int, acc_norm: bool) -> tuple[float, list]:
    from rankscope.evaluate import evaluate
    from rankscope.tasks import TASKS

    t0 = time.perf_counter()
    model, tok = load(model_dir)
    _, preds = evaluate(model, tok, TASKS["mmlu"], items, batch, 0, acc_norm=acc_norm)
    return time.perf_counter() - t0, preds


def time_harness(
    model_dir: Path, items: list, batch: int, acc_norm: bool, index: bool
) -> tuple[float, dict]:
    """Wall time of HFLM + simple_evaluate; index=False hands it a TaskManager built before
    the clock starts (its scan of the harness's task YAML files, paid once per process)."""
    from lm_eval.tasks import TaskManager

    manager = None if index else TaskManager()
    t0 = time.perf_counter()
    config = harness_mcq_config("bench", items, acc_norm)
    samples = run_harness(model_dir, [config], batch, task_manager=manager)
    return time.perf_counter() - t0, samples["bench"]


def best_of(n: int, fn: Callable[..., tuple[float, Any]], *args: Any) -> tuple[float, Any]:
    """The shortest of n timed runs (a shared machine only ever adds time) and its result."""
    runs = [fn(*args) for _ in range(max(n, 1))]
    return min(runs, key=lambda r: r[0])


def agreement(items: list, preds: list, samples: dict, acc_norm: bool) -> tuple[int, float]:
    """(items whose prediction is the same on both sides, max |log-likelihood difference|)."""
    same, diff = 0, 0.0
    for i, (it, p) in enumerate(zip(items, preds, strict=True)):
        lls = [r[0][0] for r in samples[i]["none"]["resps"]]
        ours = p["detail"]["option_logprobs" if acc_norm else "logprobs"]
        diff = max(diff, *(abs(a - b) for a, b in zip(lls, ours, strict=True)))
        scores = [ll / len(c) for ll, c in zip(lls, it.choices, strict=True)] if acc_norm else lls
        theirs = "ABCDE"[max(range(len(scores)), key=scores.__getitem__)]
        same += theirs == (p["detail"]["pred_norm"] if acc_norm else p["pred"])
    return same, diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--model-size", choices=sorted(SIZES), default="tiny")
    ap.add_argument(
        "--steps",
        type=int,
        default=0,
        help="training steps; 0 (random init) by default: trained for 100 steps on 200 items "
        "the model collapses onto one letter, which makes identical predictions trivial",
    )
    ap.add_argument("--repeat", type=int, default=2, help="timings are the best of N runs")
    ap.add_argument("--acc-norm", action="store_true", help="score option texts (acc_norm)")
    ap.add_argument("--data-dir", type=Path, default=None)
    args = ap.parse_args()

    shared = ROOT.parent / "shared" / "data"
    data_dir = args.data_dir or (
        shared if (shared / "mmlu").is_dir() else ROOT / "tests/fixtures/data"
    )
    items = mmlu_items(data_dir, args.items)
    d, layers = SIZES[args.model_size]
    steps = args.steps
    with tempfile.TemporaryDirectory() as tmp:
        texts = [f"{it.prompt} {it.completion}" for it in items]
        model_dir = build_tiny_lm(Path(tmp), texts, d=d, layers=layers, steps=steps)
        run = (model_dir, items, args.batch_size, args.acc_norm)
        t_ours, preds = best_of(args.repeat, time_rankscope, *run)
        t_full, samples = best_of(args.repeat, time_harness, *run, True)
        t_eval, _ = best_of(args.repeat, time_harness, *run, False)
    same, diff = agreement(items, preds, samples, args.acc_norm)
    metric = "acc_norm" if args.acc_norm else "acc"
    print(f"data: {data_dir}  items: {len(items)}  metric: {metric}  batch: {args.batch_size}")
    print(f"model: {args.model_size} (d={d}, layers={layers}, {steps} training steps)")
    print(f"{'case':<48}{'wall s':>8}{'ratio':>8}")
    rows = [
        ("rankscope evaluate() (load + score)", t_ours),
        ("lm-eval simple_evaluate (HFLM + everything)", t_full),
        ("lm-eval, task index built beforehand", t_eval),
    ]
    for name, t in rows:
        print(f"{name:<48}{t:>8.2f}{t / t_ours:>7.1f}x")
    print(f"rankscope is {t_full / t_ours:.1f}x faster ({t_eval / t_ours:.1f}x without the index)")
    print(f"identical predictions: {same}/{len(items)} ({'yes' if same == len(items) else 'NO'})")
    print(f"max |log-likelihood difference|: {diff:.2e}")
    key = "pred_norm" if args.acc_norm else "pred"
    spread = Counter(p["detail"][key] if args.acc_norm else p[key] for p in preds)
    print("rankscope's predicted letters:", dict(sorted(spread.items())))


if __name__ == "__main__":
    main()
