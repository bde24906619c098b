"""The toy world's pretrained base models, shipped inside the package.

Pretraining a toy base model is thousands of steps of float arithmetic, and two CPUs round
differently: the same recipe built on another machine gave another model (35.6 % instead of
30.0 % on toy-med), so every score downstream moved. The package therefore ships the pretrained
`default` and `small` worlds (world seed 0) as ordinary Hugging Face model directories with a
manifest: the world spec and its hash, the generator version and the sha256 of every file.
A sweep loads these exact bytes on every machine; `rankscope world build` still rebuilds from
the recipe and says whether its result equals the shipped file (`compare_to_shipped`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from rankscope.errors import RankscopeError
from rankscope.world.spec import WORLD_VERSION, WorldSpec

SHIPPED_ROOT = Path(__file__).parent / "base_models"
MANIFEST = "MANIFEST.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manifests() -> dict[str, Path]:
    """spec key -> shipped model dir, for every manifest in the package."""
    out = {}
    for path in sorted(SHIPPED_ROOT.glob(f"*/{MANIFEST}")):
        out[json.loads(path.read_text())["spec_key"]] = path.parent
    return out


@functools.cache
def _verified(path: Path) -> Path:
    """The shipped dir after checking every file against its manifest (once per process)."""
    manifest = json.loads((path / MANIFEST).read_text())
    for name, digest in manifest["files"].items():
        f = path / name
        if not f.is_file() or sha256_file(f) != digest:
            raise RankscopeError(
                f"{f}: missing or not the shipped file (sha256 differs from {path / MANIFEST}); "
                "reinstall rankscope"
            )
    return path


def shipped_model_dir(spec: WorldSpec) -> Path | None:
    """The shipped base model of this exact world spec (verified), or None if none ships."""
    path = _manifests().get(spec.key())
    return _verified(path) if path else None


def write_manifest(model_path: Path, spec: WorldSpec, extra: dict[str, Any]) -> dict[str, Any]:
    """Describe a built model dir so it can ship: spec, its hash, sha256 of every file."""
    files = {
        p.name: sha256_file(p)
        for p in sorted(Path(model_path).iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {
        "spec_key": spec.key(),
        "world_version": WORLD_VERSION,
        "spec": spec.model_spec(),
        "files": files,
        **extra,
    }
    (Path(model_path) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def compare_to_shipped(built: Path, spec: WorldSpec) -> str:
    """One sentence: does a model built from the recipe equal the shipped one?"""
    shipped = shipped_model_dir(spec)
    if shipped is None:
        return "no base model ships for this world spec; sweeps use this build"
    name = "model.safetensors"
    if sha256_file(built / name) == sha256_file(shipped / name):
        return f"identical to the shipped weights ({shipped})"
    from safetensors.torch import load_file

    a, b = load_file(built / name), load_file(shipped / name)
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    return (
        f"differs from the shipped weights (largest |difference| {worst:.3g}: this machine's "
        f"floating-point path); sweeps use the shipped weights in {shipped}"
    )
