"""Training tokens/s of rankscope's `train()` (padding-free packing + completion-only logits,
issue 16) against plain PEFT + `transformers.Trainer` on padded batches, on the real model.

SmolLM2-135M-Instruct (converted once into $RANKSCOPE_CACHE, ~45 s), MedMCQA training items
from the shipped subset (src/rankscope/data/smol, chat template on, as configs/smol-cpu.yaml),
max_seq_len 256, micro-batch 8, fp32, one epoch. For LoRA r = 32 (alpha 64, q/k/v/o_proj)
and full SFT, both sides start from the same weights and seed, train on the same token rows
(`rankscope.train.encode`), in the same order, for the same optimizer steps:

- baseline: `get_peft_model` (LoRA) + `Trainer` with `DataCollatorForSeq2Seq(padding=True)`,
  the model's own loss over all logits: what a user writes;
- rankscope: `rankscope.train.train` with `train.packing` and `train.completion_logits` on.

tokens/s counts the same real (non-pad) tokens on both sides, over the wall time of
`Trainer.train()` alone (model loading, tokenising and Trainer set-up excluded on both sides);
with --repeats N each side runs N times, alternating, and its fastest run counts (on a
machine with other load the spread between runs is ~10-15 %).
Prints tokens/s, the speed-up over the baseline and the final (last step's) and mean train
losses with their relative differences. Run from the repository root:

    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py [--items 48] [--methods lora full]
        [--repeats 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL = "smollm2-135m-instruct"
DATA_DIR = "src/rankscope/data/smol"
LR = {"lora": 2e-4, "full": 5e-5}  # configs/smol-cpu.yaml


def _config(method: str, args: argparse.Namespace) -> Any:
    from rankscope.config import load_config

    return load_config(
        None,
        [
            "seeds=[0]",
            f"model.name={MODEL}",
            "model.dtype=float32",
            "data.source=files",
            f"data.dir={DATA_DIR}",
            "data.chat_template=true",
            "tasks.train=[medmcqa]",
            "tasks.eval=[medmcqa, mmlu]",
            "tasks.retention=mmlu",
            "methods.base=false",
            f"methods.full.enabled={method == 'full'}",
            f"methods.lora.enabled={method == 'lora'}",
            "methods.lora.ranks=[32]",
            "methods.lora.alpha=2r",
            f"methods.lora.dropout={args.dropout}",
            f"methods.lora.lr={LR['lora']}",
            f"methods.full.lr={LR['full']}",
            "train.epochs=1",
            f"train.batch_size={args.batch_size}",
            "train.grad_accum=1",
            f"train.max_seq_len={args.max_seq_len}",
            "train.precision=fp32",
            "train.logging_steps=1",
            "train.save_steps=0",
            "train.packing=true",
            "train.completion_logits=true",
        ],
    )


def _items(n_items: int) -> list:
    from rankscope.tasks import TASKS
    from rankscope.tasks.base import DataConfig, TaskContext

    ctx = TaskContext(data=DataConfig(source="files", dir=DATA_DIR))
    items = TASKS["medmcqa"].items("train", ctx)
    if len(items) < n_items:
        raise SystemExit(f"--items {n_items}: only {len(items)} MedMCQA training items")
    return items[:n_items]


def _result(seconds: float, n_tokens: int, log: list[float], mean_loss: float) -> dict:
    return {
        "seconds": seconds,
        "tokens_per_second": n_tokens / seconds,
        "final_loss": log[-1],
        "mean_loss": mean_loss,
        "steps": len(log),
    }


def baseline(method: str, cfg: Any, items: list, work: Path) -> dict:
    """Plain PEFT + Trainer on padded batches (the model's own loss over all positions)."""
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        set_seed,
    )
    from transformers.trainer_callback import PrinterCallback

    from rankscope.models import resolve_model_path
    from rankscope.plan import make_plan
    from rankscope.train import encode, training_args

    (run,) = make_plan(cfg)
    path = resolve_model_path(cfg.model)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    rows = encode(items, tok, cfg.train.max_seq_len, cfg.data.chat_template)
    set_seed(run.seed)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        lc = cfg.methods.lora
        peft_cfg = LoraConfig(
            r=run.rank,
            lora_alpha=run.alpha,
            lora_dropout=lc.dropout,
            target_modules=list(lc.target_modules),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, peft_cfg)
    args = training_args(cfg, run.lr, run.seed, work)  # the same optimizer, schedule, seed
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100),
    )
    trainer.remove_callback(PrinterCallback)  # quiet, as rankscope's (no effect on speed)
    t0 = time.perf_counter()
    out = trainer.train()
    seconds = time.perf_counter() - t0
    log = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    n_tokens = sum(len(r["input_ids"]) for r in rows)
    return _result(seconds, n_tokens, log, out.training_loss)


def rankscope_path(method: str, cfg: Any, items: list, work: Path) -> dict:
    """`rankscope.train.train` with packing and completion-only logits on."""
    from transformers import set_seed

    from rankscope.methods import METHODS, load_base
    from rankscope.plan import make_plan
    from rankscope.train import encode, train

    (run,) = make_plan(cfg)
    base, tok, _ = load_base(cfg.model)
    set_seed(run.seed)
    model = METHODS[method].prepare(base, run, cfg)
    rec = train(model, tok, items, cfg, run.lr, run.seed, work)
    log = [r["loss"] for r in rec["log"]]
    rows = encode(items, tok, cfg.train.max_seq_len, cfg.data.chat_template)
    n_tokens = sum(len(r["input_ids"]) for r in rows)
    return _result(rec["train_seconds"], n_tokens, log, sum(log) / len(log))


def _padding(items: list, cfg: Any) -> str:
    """Real tokens, padded positions and logit positions of the batches, for the record."""
    from rankscope.models import load_base
    from rankscope.train import encode

    tok = load_base(cfg.model)[1]
    rows = encode(items, tok, cfg.train.max_seq_len, cfg.data.chat_template)
    bs = cfg.train.batch_size
    real = sum(len(r["input_ids"]) for r in rows)
    batches = [rows[i : i + bs] for i in range(0, len(rows), bs)]
    padded = sum(len(b) * max(len(r["input_ids"]) for r in b) for b in batches)
    learned = sum(sum(t != -100 for t in r["labels"][1:]) for r in rows)
    return (
        f"{len(rows)} items, {len(batches)} steps of {bs}: {real} real tokens, {padded} "
        f"padded positions ({padded / real:.2f}x), logits needed at {learned} positions"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=48, help="MedMCQA training items (1 epoch)")
    ap.add_argument("--methods", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-seq-len", type=int, default=256)
    ap.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout (both sides)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--repeats", type=int, default=1, help="runs per side; the fastest counts")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    items = _items(args.items)
    print(f"{MODEL}, fp32, {args.threads} thread(s); {_padding(items, _config('lora', args))}")
    head = f"{'case':34s} {'tokens/s':>9s} {'speed-up':>9s} {'final loss':>11s} {'mean loss':>10s}"
    print(head)
    for method in args.methods:
        cfg = _config(method, args)
        with tempfile.TemporaryDirectory() as d:
            runs: dict[str, list[dict]] = {"baseline": [], "rankscope": []}
            for i in range(args.repeats):  # alternating, so both sides see the same noise
                runs["baseline"].append(baseline(method, cfg, items, Path(d) / f"b{i}"))
                runs["rankscope"].append(rankscope_path(method, cfg, items, Path(d) / f"r{i}"))
        ref, got = (max(r, key=lambda x: x["tokens_per_second"]) for r in runs.values())
        assert ref["steps"] == got["steps"], (ref["steps"], got["steps"])
        label = "LoRA r=32" if method == "lora" else "full SFT"
        for name, r in ((f"{label}: PEFT + Trainer, padded", ref), (f"{label}: rankscope", got)):
            print(
                f"{name:34s} {r['tokens_per_second']:9.1f} "
                f"{r['tokens_per_second'] / ref['tokens_per_second']:8.2f}x "
                f"{r['final_loss']:11.4f} {r['mean_loss']:10.4f}"
            )
        final = (got["final_loss"] - ref["final_loss"]) / ref["final_loss"]
        mean = (got["mean_loss"] - ref["mean_loss"]) / ref["mean_loss"]
        print(
            f"{'':34s} {got['steps']} steps each; loss difference: final {final:+.2%}, "
            f"mean {mean:+.2%}"
        )


if __name__ == "__main__":
    main()
