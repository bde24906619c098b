"""Shared fixtures: a small toy world built once per test session, in a private cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rankscope.config import load_config


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A private model cache for the session (never the user's ~/.cache)."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["RANKSCOPE_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def small_model_dir(cache_dir: Path) -> Path:
    """The 'small' toy world's base model, pretrained once (~20 s on 2 cores)."""
    from rankscope.world.build import ensure_base_model
    from rankscope.world.generator import PRESETS

    return ensure_base_model(PRESETS["small"], cache_dir)


def small_sweep(out_dir: Path, cache_dir: Path, *extra: str):
    """A tiny but real sweep: small world, one train task, base + full + LoRA at two ranks.

    It trains on toy-arith because the small world's base model already answers its fact
    domains (their answers are facts it knows), while the worked-answer format is new to it.
    """
    return load_config(
        None,
        [
            "name=tiny",
            f"output_dir={out_dir}",
            f"model.cache_dir={cache_dir}",
            "model.world=small",
            "tasks.train=[toy-arith]",
            "tasks.eval=[toy-arith, toy-general, toy-med]",
            "methods.lora.ranks=[4,16]",
            "methods.full.lr=1e-3",
            "methods.lora.lr=3e-3",
            "eval.max_new_tokens=32",
            *extra,
        ],
    )
