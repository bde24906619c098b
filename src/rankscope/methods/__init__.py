"""Methods: base (untouched), full (every weight trainable), lora (peft; variants are options).

One module per method (the PEFT layout); each owns its plan expansion, hash fields, training
wrapper, artifact, parameter count, ΔW extraction and label (see `methods.base.Method`). The
registry's order is the plan's order and the report's: base, full, lora.

Model loading is not a method (`rankscope.models`); its names are re-exported here because
callers have always imported them from this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rankscope.config import ModelConfig, SweepConfig
from rankscope.errors import RankscopeError
from rankscope.identity import RunSpec
from rankscope.methods.base import BASE, DeltaW, Method
from rankscope.methods.full import FULL
from rankscope.methods.lora import LORA
from rankscope.models import count_params, load_base, resolve_model_path

METHODS: dict[str, Method] = {m.name: m for m in (BASE, FULL, LORA)}


def get(name: str) -> Method:
    """The method called `name` (a run's `method` column)."""
    try:
        return METHODS[name]
    except KeyError:
        known = ", ".join(METHODS)
        raise RankscopeError(f"unknown method {name!r} (known: {known})") from None


def analysed_targets(cfg: SweepConfig) -> list[str]:
    """The module names whose ΔW the analysis compares across methods: the adapter's
    targets. Full SFT changes every weight; its ΔW is read on the same modules so that the
    two methods are compared like for like."""
    return LORA.target_names(cfg)


def load_for_eval(run: RunSpec, run_dir: Path, mcfg: ModelConfig) -> tuple[Any, Any]:
    """The model a run produced, ready for evaluation (eval mode, no dropout)."""
    base, tok, _ = load_base(mcfg)
    model = get(run.method).load(base, run_dir, mcfg)
    model.eval()
    return model, tok


__all__ = [
    "BASE",
    "FULL",
    "LORA",
    "METHODS",
    "DeltaW",
    "Method",
    "analysed_targets",
    "count_params",
    "get",
    "load_base",
    "load_for_eval",
    "resolve_model_path",
]
