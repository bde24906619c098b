"""Checks that need the model's shapes, run before a sweep writes anything.

The config checks itself (each section in its __post_init__); what only the model can
answer — do the LoRA target modules exist, does every rank fit under min(d_in, d_out) — is
checked here on a meta-device copy (shapes only, no weights), so a bad rank fails in
seconds, not after the base model was loaded and the first runs were trained.
"""

from __future__ import annotations

from rankscope.config import SweepConfig


def check_model_fits(cfg: SweepConfig) -> None:
    """Raise ConfigError if LoRA's targets match nothing or a rank exceeds a target layer."""
    lc = cfg.methods.lora
    if not lc.enabled:
        return
    from rankscope.estimate import meta_model
    from rankscope.targets import check_targets, resolve_targets

    model = meta_model(cfg.model)
    check_targets(model, resolve_targets(model.config.model_type, lc.target_modules), lc.ranks)
