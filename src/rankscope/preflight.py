"""Checks that need the model's shapes, run before a sweep writes anything.

The config checks itself (each section in its __post_init__); what only the model can
answer — do the LoRA target modules exist, does every rank fit under min(d_in, d_out) — is
checked here on a meta-device copy (shapes only, no weights), so a bad rank fails in
seconds, not after the base model was loaded and the first runs were trained. Each method
says whether it needs the shapes and runs its own check (`Method.preflight`).
"""

from __future__ import annotations

from rankscope import methods
from rankscope.config import SweepConfig
from rankscope.estimate import meta_model


def check_model_fits(cfg: SweepConfig) -> None:
    """Raise ConfigError if an enabled method's settings do not fit the model (LoRA: its
    targets match nothing or a rank exceeds a target layer). No model is built unless an
    enabled method needs its shapes."""
    checking = [m for m in methods.METHODS.values() if m.checks_shapes and m.enabled(cfg)]
    if not checking:
        return
    model = meta_model(cfg.model)
    for method in checking:
        method.preflight(cfg, model)
