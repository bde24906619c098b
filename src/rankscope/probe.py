"""`rankscope probe`: predict the LoRA rank of each train task before the sweep.

Per train task and seed of a config, a short gradient probe of full fine-tuning: `steps`
batches of the task's training items, built as the run unit builds them (the sweep's
decontaminated, `tasks.max_train_items`-capped items, encoded by `train.encode` with the
config's `train.max_seq_len` and chat template, `train.batch_size x train.grad_accum` items a
step, a seeded shuffle), each one forward and backward pass of the base model. The weights
never move and no optimizer exists: the gradient of every LoRA target module's weight is
summed over the steps, so the sum is the direction of the first full-fine-tuning steps
(an SGD update ΔW ≈ -lr·Σg). Only the target weights get gradients (the rest is frozen:
their gradients are not needed and would double the cost).

The spectrum of each module's summed gradient gives two numbers: its *energy rank* (the
smallest k whose top-k squared singular values hold `energy` of the total, default 90 %)
and its *stable rank* ‖G‖_F²/‖G‖_2². The prediction is the **median over modules** of the
energy rank, rounded up to the nearest rank of the config's grid (`methods.lora.ranks`);
above the grid's largest rank it is 'full' (full SFT) when the config has full SFT.

`rankscope.probe_peft` adds peft's data-driven rank choices (EVA, AdaLoRA) as further
predictors, `rankscope.probe_validate` compares predictions with a finished sweep's
recommendation; `rankscope.probe_core` holds what they share. Torch is imported inside the
functions that need it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from rankscope.config import SweepConfig
from rankscope.probe_core import (
    AGGREGATE,
    DEFAULT_ENERGY,
    DEFAULT_STEPS,
    FULL,
    Prediction,
    ProbeOptions,
    ProbeRow,
    budget_rank,
    check_config,
    energy_rank,
    grid_of,
    parse_compare,
    probe_batches,
    stable_rank,
    summarise,
    target_names,
    to_grid,
    tokens_of,
)
from rankscope.targets import matched_layers, resolve_targets

__all__ = [
    "DEFAULT_ENERGY",
    "DEFAULT_STEPS",
    "FULL",
    "Prediction",
    "ProbeOptions",
    "ProbeRow",
    "check_config",
    "energy_rank",
    "gradient_prediction",
    "parse_compare",
    "probe_batches",
    "run_probe",
    "stable_rank",
    "to_grid",
    "to_json",
]


# ------------------------------------------------------------------ the gradient probe
def summed_gradients(model: Any, batches: list[dict], names: list[str]) -> dict[str, Any]:
    """Σ over batches of ∂loss/∂W for the named modules' weights (float64 tensors), with the
    weights left as they were (no step, no optimizer: nothing but the running sums)."""
    import torch

    mods = dict(model.named_modules())
    for p in model.parameters():
        p.requires_grad_(False)
    weights = {n: mods[n].weight for n in names}
    for w in weights.values():
        w.requires_grad_(True)
    sums = {n: torch.zeros(w.shape, dtype=torch.float64) for n, w in weights.items()}
    model.train()
    for batch in batches:
        model(**batch).loss.backward()
        for n, w in weights.items():
            sums[n] += w.grad.detach().double().cpu()
            w.grad = None
    model.eval()
    return sums


def gradient_prediction(
    model: Any, batches: list[dict], cfg: SweepConfig, energy: float
) -> Prediction:
    import torch

    t0 = time.perf_counter()
    grads = summed_gradients(model, batches, target_names(model, cfg))
    per_module = {}
    for name, g in grads.items():
        sv = torch.linalg.svdvals(g).numpy()  # numpy's BLAS is ~10x slower on a busy CPU
        per_module[name] = {"rank": energy_rank(sv, energy), "stable_rank": stable_rank(sv)}
    cost = (time.perf_counter() - t0, tokens_of(batches), len(batches))
    return summarise("probe", per_module, cfg, cost)


def full_rank(cfg: SweepConfig) -> int:
    """min(d_in, d_out) of the largest target module: the rank full SFT counts as."""
    from rankscope.models import load_base

    model = load_base(cfg.model)[0]
    targets = resolve_targets(model.config.model_type, cfg.methods.lora.target_modules)
    return max(min(d_in, d_out) for _, d_in, d_out in matched_layers(model, targets))


# ------------------------------------------------------------------ the command
Progress = Callable[[str, int, Prediction], None]


def _one(cfg: SweepConfig, task: str, seed: int, opts: ProbeOptions, tok: Any) -> dict:
    """Every predictor of one (task, seed), each on its own fresh copy of the base model."""
    from transformers import set_seed

    from rankscope.models import load_base
    from rankscope.probe_peft import PEFT_PREDICTORS

    batches = probe_batches(cfg, task, seed, opts.steps, tok)
    set_seed(seed)
    out = {"probe": gradient_prediction(load_base(cfg.model)[0], batches, cfg, opts.energy)}
    for name in opts.compare:
        set_seed(seed)
        out[name] = PEFT_PREDICTORS[name](load_base(cfg.model)[0], batches, cfg, opts)
    return out


def run_probe(
    cfg: SweepConfig, opts: ProbeOptions, on_done: Progress | None = None
) -> list[ProbeRow]:
    """One ProbeRow per (train task, seed of the config)."""
    from rankscope.libs import quiet_libraries
    from rankscope.models import load_base

    check_config(cfg)
    quiet_libraries()
    tok = load_base(cfg.model)[1]
    rows = []
    for task in cfg.tasks.train:
        for seed in cfg.seeds:
            preds = _one(cfg, task, seed, opts, tok)
            for p in preds.values():
                if on_done:
                    on_done(task, seed, p)
            rows.append(ProbeRow(task, seed, preds))
    return rows


def to_json(cfg: SweepConfig, opts: ProbeOptions, rows: list[ProbeRow]) -> dict[str, Any]:
    return {
        "config": cfg.name,
        "options": asdict(opts),
        "aggregate": AGGREGATE,
        "grid": grid_of(cfg),
        "budget_rank": budget_rank(cfg, opts) if opts.compare else None,
        "full_rank": full_rank(cfg),
        "rows": [
            {
                "task": r.task,
                "seed": r.seed,
                "predictions": {k: asdict(p) for k, p in r.predictions.items()},
            }
            for r in rows
        ],
    }
