"""Shared fixtures: a small toy world built once per test session, in a private cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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
