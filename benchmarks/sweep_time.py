"""Wall time of the default toy sweep: cold (builds the toy base model) and warm (cached).

Targets (issue 2): cold <= 15 min, warm <= 10 min on 2 CPU cores. Prints the figures and the
warm/cold ratio; the baseline is the cold run measured in the same invocation.

    python benchmarks/sweep_time.py [--config configs/toy.yaml] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_run(config: str, out: Path, cache: Path, sets: list[str]) -> float:
    env = {**os.environ, "RANKSCOPE_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "rankscope.cli", "run", config, "-o", str(out)]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="configs/toy.yaml")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--warm-only", action="store_true", help="skip the cold run")
    ap.add_argument("--cold-only", action="store_true", help="skip the warm run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        cache = tmp_path / "cache"
        cold = None
        if not args.warm_only:
            cold = timed_run(args.config, tmp_path / "cold", cache, args.sets)
        else:
            cache = Path(os.environ.get("RANKSCOPE_CACHE", Path.home() / ".cache/rankscope"))
        warm = (
            None if args.cold_only else timed_run(args.config, tmp_path / "warm", cache, args.sets)
        )
    print(f"{'case':<34}{'wall s':>10}{'target s':>10}")
    if cold is not None:
        print(f"{'cold (builds toy base model)':<34}{cold:>10.1f}{900:>10}")
    if warm is not None:
        print(f"{'warm (base model cached)':<34}{warm:>10.1f}{600:>10}")
    if cold is not None and warm is not None:
        print(f"warm/cold ratio (baseline: cold run): {warm / cold:.2f}")


if __name__ == "__main__":
    main()
