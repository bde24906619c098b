"""The grid: base model x train task x method x seed, with stable readable run ids.

A run id names what the run *is* (`toy-arith__lora-r16-a32-lr5e-4__s0`); its config hash records
everything that shaped it, so a finished run is reused only when nothing relevant changed.
Each method expands its own runs and names its own hash fields (`rankscope.methods`); this
module only walks the grid in registry order and joins the shared identity with the
method's part.
"""

from __future__ import annotations

from typing import Any

from rankscope import methods, replay
from rankscope.config import SweepConfig
from rankscope.identity import BASE_RUN_ID, RunSpec, hash_identity, run_identity

__all__ = ["BASE_RUN_ID", "RunSpec", "config_hash", "identity", "make_plan"]


def identity(run: RunSpec, cfg: SweepConfig) -> dict[str, Any]:
    """Everything that determines this run's results (its config hash covers it)."""
    return run_identity(run, cfg, methods.get(run.method).hash_fields(cfg))


def config_hash(run: RunSpec, cfg: SweepConfig) -> str:
    """The run's config hash: equal hashes mean the stored results are still valid."""
    return hash_identity(identity(run, cfg))


def make_plan(cfg: SweepConfig) -> list[RunSpec]:
    """Expand the config into runs: shared runs first (the base model, one row), then per
    train task and seed every enabled method's runs, in registry order."""
    replay.check(cfg)  # a replay fraction needs a general set to draw from
    active = [m for m in methods.METHODS.values() if m.enabled(cfg)]
    runs = [run for m in active if m.shared for run in m.expand(cfg, None, cfg.seeds[0])]
    for task in cfg.tasks.train:
        for seed in cfg.seeds:
            for m in active:
                if not m.shared:
                    runs += m.expand(cfg, task, seed)
    return runs
