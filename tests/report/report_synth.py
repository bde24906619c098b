"""Synthetic results stores with known per-item predictions, for the report's statistics.

Every run is written from explicit 0/1 correctness vectors per (task, split), so a test
knows every metric and every paired difference exactly. Items are ``<task>/<i>``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rankscope.store import Store


@dataclass
class Run:
    run_id: str
    method: str
    train_task: str | None = None
    rank: int | None = None
    alpha: float | None = None
    lr: float | None = None
    seed: int = 0
    variant: str = ""
    test: dict[str, np.ndarray] = field(default_factory=dict)
    """Eval task -> 0/1 correctness per item (test split)."""
    val: dict[str, np.ndarray] = field(default_factory=dict)
    """Task -> 0/1 correctness per item (validation split)."""


def flip(vec: np.ndarray, up: int = 0, down: int = 0, start: int = 0) -> np.ndarray:
    """A copy of `vec` with `up` wrong items made right and `down` right items made wrong,
    taking the wrong / right items in order from position `start` on."""
    out = np.array(vec, dtype=int)
    wrong = [i for i in range(start, out.size) if out[i] == 0][:up]
    right = [i for i in range(start, out.size) if out[i] == 1][:down]
    assert len(wrong) == up and len(right) == down, "not enough items to flip"
    out[wrong], out[right] = 1, 0
    return out


def noisy(rng: np.random.Generator, latent: np.ndarray, acc: float, noise: float = 0.1):
    """Items with latent ease below `acc` are right; then each item flips with prob `noise`
    (the seed's noise): runs of equal `acc` differ only by that noise, paired on items."""
    right = latent < acc
    return (right ^ (rng.random(latent.size) < noise)).astype(int)


def write_store(
    path: Path,
    runs: list[Run],
    train: list[str],
    evals: list[str],
    retention: str | None,
) -> None:
    store = Store(path)
    tasks = {"train": train, "eval": evals, "retention": retention}
    store.set_meta(
        {
            "sweep_name": "synth",
            "eval_tasks": json.dumps(evals),
            "train_tasks": json.dumps(train),
            "config_json": json.dumps({"tasks": tasks}),
            **({"retention_task": retention} if retention else {}),
        }
    )
    for r in runs:
        store.upsert_run(
            run_id=r.run_id,
            model="toy",
            train_task=r.train_task,
            method=r.method,
            rank=r.rank,
            alpha=r.alpha,
            lr=r.lr,
            seed=r.seed,
            variant=r.variant,
            config_hash="h",
            status="done",
            trainable_params=None if r.method == "base" else 1000 * (r.rank or 100),
            total_params=100_000,
        )
        for split, vecs in (("test", r.test), ("val", r.val)):
            for task, vec in vecs.items():
                v = float(np.mean(vec))
                preds = [
                    {"item_id": f"{task}/{i:04d}", "pred": "A", "gold": "A", "correct": int(c)}
                    for i, c in enumerate(vec)
                ]
                metrics = {"acc": (v, float(np.sqrt(v * (1 - v) / len(vec))), len(vec))}
                store.save_eval(r.run_id, task, metrics, preds, split=split)
    store.close()
