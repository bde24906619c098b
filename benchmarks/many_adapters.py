"""Evaluating k LoRA adapters of one base model: one process per adapter against one process
that loads the base model once and swaps the adapters (`rankscope.adapters.AdapterBank`).

k adapters (default 4: r = 8, 16, 32, 64, alpha 2r, q/k/v/o_proj) are made with random
non-zero factors (`init_lora_weights=False`, one seed each) and saved as LoRA runs save them
(`<run dir>/adapter/`, `save_pretrained`) in a temporary directory. Then, each timed from the
parent around `subprocess.run` (so every side pays Python start-up, imports and the base
model's load the same way):

1. one process per adapter: `python benchmarks/many_adapters.py --child one ...`, each
   importing rankscope, loading base + adapter (`load_for_eval`) and evaluating: what
   running an evaluation script (or lm-eval) per adapter costs;
2. one process for all k with `load_for_eval` per adapter (`--child copies`): the base model
   read once, deep-copied and wrapped per adapter (what rankscope's runner does
   for the runs of one worker);
3. one process for all k with the bank (`--child bank`): base model loaded once, adapters
   loaded into it, activated and deleted in turn.

Prints the three wall times, the ratios of 1 and 2 to 3, and whether every adapter's
predictions (letters and log-probabilities) are identical on all three. Models: `toy` (the
shipped toy base model, toy-general test items) or `smollm2-135m-instruct` (MMLU test items
from the shipped subset, chat template on, as configs/smol-cpu.yaml). Run from the repository root:

    OMP_NUM_THREADS=1 python benchmarks/many_adapters.py [--model toy] [--k 4] [--items 64]
    python benchmarks/many_adapters.py --model smollm2-135m-instruct --items 32
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SMOL = "smollm2-135m-instruct"
SMOL_DATA = ROOT / "src/rankscope/data/smol"
RANKS = (8, 16, 32, 64)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
SIDES = {
    "one": "one process per adapter",
    "copies": "one process, load_for_eval per adapter (base deep-copied per adapter)",
    "bank": "one process, base loaded once, adapters swapped",
}
QUIET = {
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "PYTHONWARNINGS": "ignore::FutureWarning",
}
"""Every process's environment: no load progress bars or deprecation warnings in the output."""


def model_config(model: str) -> Any:
    from rankscope.config import ModelConfig, load_config

    return load_config().model if model == "toy" else ModelConfig(name=SMOL)


def task_items(model: str, n: int) -> tuple[str, list, bool]:
    """(task name, the first n test items, chat template on)."""
    from rankscope.config import DataConfig, load_config
    from rankscope.sweep import Sweep
    from rankscope.tasks import TASKS, TaskContext

    if model == "toy":
        return "toy-general", Sweep(load_config()).items("toy-general", "test")[:n], False
    ctx = TaskContext(data=DataConfig(source="files", dir=str(SMOL_DATA)))
    return "mmlu", TASKS["mmlu"].items("test", ctx)[:n], True


def run_spec(rank: int, i: int) -> Any:
    from rankscope.identity import RunSpec

    return RunSpec(
        f"bench__lora-r{rank}-a{2 * rank}-lr1e-4__s{i}", "lora", "bench", i, rank, 2 * rank, 1e-4
    )


def write_adapters(
    base: Any, out: Path, ranks: list[int], targets: list[str] | None = None
) -> list[tuple[Any, Path]]:
    """One random LoRA adapter per rank, saved as a LoRA run saves it; [(run, run dir)]."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    from rankscope.adapters import adapter_dir

    runs = []
    for i, r in enumerate(ranks):
        run = run_spec(r, i)
        conf = LoraConfig(
            r=r,
            lora_alpha=2 * r,
            target_modules=targets or TARGETS,
            init_lora_weights=False,
            task_type="CAUSAL_LM",
        )
        torch.manual_seed(1000 + i)
        peft_model = get_peft_model(copy.deepcopy(base), conf)
        run_dir = out / run.run_id
        peft_model.save_pretrained(adapter_dir(run_dir))
        runs.append((run, run_dir))
    return runs


def evaluate_items(model: Any, tok: Any, task: str, items: list, chat: bool, batch: int) -> list:
    """[(item id, predicted letter, letter log-probabilities)] of one model."""
    from rankscope.evaluate import evaluate
    from rankscope.tasks import TASKS

    _, preds = evaluate(model, tok, TASKS[task], items, batch, 32, chat=chat)
    return [[p["item_id"], p["pred"], p["detail"]["logprobs"]] for p in preds]


def child(spec: dict[str, Any]) -> None:
    """A timed side in its own process: `one` evaluates one run via `load_for_eval`,
    `copies` every run via `load_for_eval` (the base model read once, deep-copied per run),
    `bank` every run via one `AdapterBank`; the predictions go to spec['out'] as JSON."""
    from rankscope.adapters import AdapterBank
    from rankscope.identity import RunSpec
    from rankscope.methods import load_for_eval

    mcfg = model_config(spec["model"])
    task, items, chat = task_items(spec["model"], spec["items"])
    runs = [(RunSpec(**r), Path(d)) for r, d in spec["runs"]]
    results = {}
    if spec["side"] == "bank":
        with AdapterBank(mcfg) as bank:
            for run, run_dir in runs:
                got = bank.activate(run, run_dir)
                assert got is not None, "the bank must apply to plain LoRA runs"
                results[run.run_id] = evaluate_items(*got, task, items, chat, spec["batch"])
    else:  # one (one run) or copies (every run, each on its own copy of the base model)
        for run, run_dir in runs:
            model, tok = load_for_eval(run, run_dir, mcfg)
            results[run.run_id] = evaluate_items(model, tok, task, items, chat, spec["batch"])
            del model
    Path(spec["out"]).write_text(json.dumps(results))


def spawn(spec: dict[str, Any], tmp: Path, tag: str) -> tuple[float, dict]:
    """Run one child; (its wall time, its predictions)."""
    path, out = tmp / f"{tag}.json", tmp / f"{tag}.out.json"
    path.write_text(json.dumps({**spec, "out": str(out)}))
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--child", str(path)],
        check=True,
        cwd=ROOT,
        env={**os.environ, **QUIET},
    )
    return time.perf_counter() - t0, json.loads(out.read_text())


def time_sides(args: argparse.Namespace, runs: list, tmp: Path) -> dict[str, tuple]:
    """{side: (wall seconds, predictions)}; one process per adapter, then one for all."""
    from dataclasses import asdict

    common = {"model": args.model, "items": args.items, "batch": args.batch_size}
    pairs = [[asdict(r), str(rd)] for r, rd in runs]
    one_t, one_preds = 0.0, {}
    for i, pair in enumerate(pairs):
        t, preds = spawn({**common, "side": "one", "runs": [pair]}, tmp, f"one{i}")
        one_t, one_preds = one_t + t, {**one_preds, **preds}
        print(f"  process per adapter: {pair[0]['run_id']}: {t:.2f} s")
    sides = {"one": (one_t, one_preds)}
    for side in ("copies", "bank"):
        sides[side] = spawn({**common, "side": side, "runs": pairs}, tmp, side)
    return sides


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    os.environ.update(QUIET)
    warnings.simplefilter("ignore", FutureWarning)
    from rankscope.models import load_base

    base, _, path = load_base(model_config(args.model))
    ranks = [RANKS[i % len(RANKS)] for i in range(args.k)]
    print(f"model {args.model} ({path}), {args.k} adapters r={ranks}, {args.items} items")
    with tempfile.TemporaryDirectory() as d:
        runs = write_adapters(base, Path(d) / "runs", ranks)
        sides = time_sides(args, runs, Path(d))
    (one_t, one_p), (copies_t, copies_p), (bank_t, bank_p) = (sides[s] for s in SIDES)
    for side, label in SIDES.items():
        t = sides[side][0]
        print(f"{label}: {t:.2f} s ({t / args.k:.2f} s per adapter)")
    print(f"ratio, one process per adapter / adapters swapped: {one_t / bank_t:.2f}x")
    print(f"ratio, load_for_eval per adapter / adapters swapped: {copies_t / bank_t:.2f}x")
    same = one_p == copies_p == bank_p
    print(f"predictions identical (letters and log-probabilities, all three): {same}")
    differ = len({json.dumps(p) for p in bank_p.values()}) == len(runs)
    letters = [[p[1] for p in preds] for preds in bank_p.values()]
    moved = sum(len(set(cols)) > 1 for cols in zip(*letters, strict=True))
    print(f"the {args.k} adapters' log-probabilities all differ: {differ}; their letters")
    print(f"  differ on {moved} of {len(letters[0]) if letters else 0} items")
    times = {f"{side}_s": sides[side][0] for side in SIDES}
    return {**times, "identical": same, "adapters_differ": differ}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["toy", SMOL], default="toy")
    p.add_argument("--k", type=int, default=4, help="number of adapters")
    p.add_argument("--items", type=int, default=64, help="test items per adapter")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--child", help=argparse.SUPPRESS)  # a timed side's spec (internal)
    return p.parse_args(argv)


if __name__ == "__main__":
    ns = parse_args(None)
    if ns.child:
        child(json.loads(Path(ns.child).read_text()))
    else:
        main()
