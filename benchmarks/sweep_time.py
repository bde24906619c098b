"""Wall time of the default toy sweep: cold (builds the toy base model) and warm (cached).

Targets (issue 2): cold <= 15 min, warm <= 10 min on 2 CPU cores. Prints the figures and the
warm/cold ratio; the baseline is the cold run measured in the same invocation.

With --compare-workers: two warm sweeps from the same cache, one run at a time in this process
(`executor.cpu_workers=1`, the baseline) and two worker processes (`executor.cpu_workers=2`);
prints both times, the speed-up, and whether the two stores hold the same metrics.

    python benchmarks/sweep_time.py [--config configs/toy.yaml] [--set key=value ...]
    RANKSCOPE_CACHE=<filled cache> python benchmarks/sweep_time.py --compare-workers
"""

from __future__ import annotations

import argparse
import os
import sqlite3
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


def metrics(out: Path) -> list[tuple]:
    with sqlite3.connect(out / "results.sqlite") as c:
        return sorted(c.execute("SELECT run_id, task, metric, value, stderr, n FROM metrics"))


def compare_workers(config: str, sets: list[str]) -> None:
    cache = Path(os.environ.get("RANKSCOPE_CACHE", Path.home() / ".cache/rankscope"))
    with tempfile.TemporaryDirectory() as tmp:
        walls, stores = {}, {}
        for n in (1, 2):
            out = Path(tmp) / f"workers{n}"
            walls[n] = timed_run(config, out, cache, [*sets, f"executor.cpu_workers={n}"])
            stores[n] = metrics(out)
    print(f"{'case (warm)':<44}{'wall s':>10}{'ratio':>8}")
    print(f"{'one run at a time, in process (baseline)':<44}{walls[1]:>10.1f}{1.0:>7.2f}x")
    print(f"{'executor.cpu_workers=2':<44}{walls[2]:>10.1f}{walls[1] / walls[2]:>7.2f}x")
    same = stores[1] == stores[2]
    print(f"same metrics in both stores: {'yes' if same else 'NO'} ({len(stores[1])} rows)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="configs/toy.yaml")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--warm-only", action="store_true", help="skip the cold run")
    ap.add_argument("--cold-only", action="store_true", help="skip the warm run")
    ap.add_argument(
        "--compare-workers", action="store_true", help="warm: cpu_workers 1 (baseline) vs 2"
    )
    args = ap.parse_args()
    if args.compare_workers:
        return compare_workers(args.config, args.sets)
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
