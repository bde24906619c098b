"""The tiny sweep configs of the tests (a module of its own: `conftest` names collide)."""

from __future__ import annotations

from pathlib import Path

from rankscope.config import load_config


def small_sweep(out_dir: Path, cache_dir: Path, *extra: str):
    """A tiny but real sweep: small world, one train task, base + full + LoRA at two ranks.

    It trains on toy-arith: the worked-answer format is new to the base model (it writes none),
    so what a few dozen steps of fine-tuning teach shows in the answers.
    """
    return load_config(
        None,
        [
            "name=tiny",
            f"output_dir={out_dir}",
            f"model.cache_dir={cache_dir}",
            "model.world=small",
            "seeds=[0]",
            "methods.lora.dropout=0.05",  # the library default (configs/toy.yaml has none)
            "tasks.train=[toy-arith]",
            "tasks.eval=[toy-arith, toy-general, toy-med]",
            "methods.lora.ranks=[4,16]",
            # full SFT at 3e-3 writes the '#### N' format in every answer after its 45 steps,
            # the same on four floating-point paths (AVX-512, AVX2, no SIMD, 1 or 2 threads);
            # at 1e-3 the shipped small model learns none of it: a threshold, not a margin
            "methods.full.lr=3e-3",
            "methods.lora.lr=3e-3",
            "eval.max_new_tokens=32",
            *extra,
        ],
    )


def one_lora_run(name: str, out_dir: Path, cache_dir: Path, *extra: str) -> list[str]:
    """`--set` lines of a sweep of one short LoRA run (r = 4 on toy-arith, small world, no
    base, no full SFT, no analysis), in this process: the smallest sweep that trains."""
    return [
        f"name={name}",
        f"output_dir={out_dir}",
        f"model.cache_dir={cache_dir}",
        "model.world=small",
        "seeds=[0]",
        "tasks.train=[toy-arith]",
        "tasks.eval=[toy-general]",
        "tasks.max_train_items=16",
        "tasks.max_eval_items=8",
        "methods.base=false",
        "methods.full.enabled=false",
        "methods.lora.ranks=[4]",
        "methods.lora.lr=3e-3",
        "train.epochs=1",
        "analysis.enabled=false",
        "executor.cpu_workers=1",
        *extra,
    ]
