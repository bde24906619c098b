"""The toy base models ship with the package: the same bytes on every machine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rankscope.config import ModelConfig
from rankscope.errors import RankscopeError
from rankscope.world import build, shipped
from rankscope.world.generator import PRESETS, WORLD_VERSION


@pytest.mark.parametrize("preset", ["default", "small"])
def test_each_preset_ships_a_model_of_its_current_recipe(preset):
    """A change to the world's recipe without re-shipping its model fails here, by name."""
    path = shipped.shipped_model_dir(PRESETS[preset])
    assert path is not None, f"no shipped model for the {preset} world's current spec"
    manifest = json.loads((path / shipped.MANIFEST).read_text())
    assert manifest["world_version"] == WORLD_VERSION
    assert manifest["spec_key"] == PRESETS[preset].key()
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(manifest["files"])
    size = (path / "model.safetensors").stat().st_size
    assert size < 8 * 2**20, "a shipped toy model stays a few MB"


def test_a_sweep_loads_the_shipped_weights_and_builds_nothing(monkeypatch, tmp_path):
    from rankscope.methods import resolve_model_path

    def no_build(*a, **k):
        raise AssertionError("a shipped world must not be pretrained again")

    monkeypatch.setattr(build, "ensure_base_model", no_build)
    mcfg = ModelConfig(name="toy", world="small", cache_dir=str(tmp_path))
    assert resolve_model_path(mcfg) == shipped.shipped_model_dir(PRESETS["small"])
    assert not build.needs_build(PRESETS["small"], tmp_path)
    assert build.needs_build(PRESETS["small"].__class__(seed=7), tmp_path)  # not shipped


def _copy_of_shipped(tmp_path: Path, monkeypatch) -> Path:
    root = tmp_path / "base_models"
    src = shipped.shipped_model_dir(PRESETS["small"])
    shutil.copytree(src, root / src.name)
    monkeypatch.setattr(shipped, "SHIPPED_ROOT", root)
    shipped._verified.cache_clear()
    return root / src.name


def test_a_tampered_shipped_file_is_refused(tmp_path, monkeypatch):
    copy = _copy_of_shipped(tmp_path, monkeypatch)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(RankscopeError, match="not the shipped file"):
        shipped.shipped_model_dir(PRESETS["small"])
    shipped._verified.cache_clear()


def test_world_build_says_whether_a_build_equals_the_shipped_file(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file, save_file

    spec = PRESETS["small"]
    same = tmp_path / "same"
    shutil.copytree(shipped.shipped_model_dir(spec), same)
    assert shipped.compare_to_shipped(same, spec).startswith("identical")
    tensors = load_file(same / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + torch.full_like(tensors[name], 1e-3)
    save_file(tensors, same / "model.safetensors", metadata={"format": "pt"})
    text = shipped.compare_to_shipped(same, spec)
    assert text.startswith("differs") and "0.001" in text
    assert "no base model ships" in shipped.compare_to_shipped(same, spec.__class__(seed=9))
