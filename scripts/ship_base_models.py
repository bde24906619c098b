"""Copy built toy base models into the package, with their manifests (a maintainer's step).

    python scripts/ship_base_models.py CACHE_DIR [PRESET ...]

takes the `default` and `small` worlds (or the presets named; world seed 0) from
CACHE_DIR/worlds/ (built by `rankscope world build --preset P --cache-dir CACHE_DIR`) and
writes them to
src/rankscope/world/base_models/<preset>-s0/. Run it only when the world's recipe changes
(WORLD_VERSION or a preset): every machine then loads these bytes.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
from pathlib import Path

from rankscope.world.build import model_dir
from rankscope.world.generator import PRESETS
from rankscope.world.shipped import SHIPPED_ROOT, write_manifest


def main(cache: Path, presets: list[str]) -> None:
    import torch
    import transformers

    for preset in presets:
        spec = PRESETS[preset]
        src = model_dir(spec, cache)
        if not (src / "world.json").is_file():
            sys.exit(f"{src}: not built; run rankscope world build --preset {preset}")
        dst = SHIPPED_ROOT / f"{preset}-s{spec.seed}"
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
        built = json.loads((src / "world.json").read_text())
        extra = {
            "preset": preset,
            "built_with": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "machine": platform.machine(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "build_seconds": round(built.get("build_seconds", 0.0), 1),
            },
        }
        manifest = write_manifest(dst, spec, extra)
        print(f"{dst}: {len(manifest['files'])} files, key {manifest['spec_key']}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:] or ["default", "small"])
