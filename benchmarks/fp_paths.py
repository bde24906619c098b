"""How much do results depend on the CPU's floating-point path? (README "What the default sweep
shows".)

    python benchmarks/fp_paths.py sweep [--set KEY=VALUE ...]   # the default sweep, twice
    python benchmarks/fp_paths.py tests                          # the quality tests, 4 paths
    python benchmarks/fp_paths.py small                          # the tests' sweep, 4 paths

`sweep` runs `rankscope run` with this machine's kernels and again with the AVX2 kernels
(`ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2`: how a CPU without AVX-512 computes),
then prints how many metric values differ and by how much. `tests` runs the tests that assert
model quality under four paths (AVX-512, AVX2, no SIMD with MKL's SSE4.2 kernels, one thread);
`small` runs the sweep those tests read (tests/sweep_configs.py, analysis off) on the same four
paths and compares every metric value and final train loss with the native path's.
Another CPU may take yet another path; this bounds what one change of path does.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
PATHS = {
    "native": {},
    "avx2": AVX2,
    "no-simd": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "one-thread": {"OMP_NUM_THREADS": "1"},
}
QUALITY_TESTS = [
    "tests/test_sweep_e2e.py::test_fine_tuning_learns_the_worked_answer_format",
    "tests/test_sweep_e2e.py::test_toy_base_model_knows_its_general_facts_and_not_the_new_domains",
]


def sweep(extra: list[str]) -> None:
    out = Path(tempfile.mkdtemp(prefix="fp-paths-"))
    got = {}
    for name in ("native", "avx2"):
        cmd = [sys.executable, "-m", "rankscope.cli", "run", "-o", str(out / name), *extra]
        subprocess.run(cmd, env={**os.environ, **PATHS[name]}, check=True)
        got[name] = {k: (v, e) for k, v, e in _rows(out / name / "results.sqlite")}
    a, b = got["native"], got["avx2"]
    moved = sorted((abs(a[k][0] - b[k][0]) * 100, k) for k in a if a[k][0] != b[k][0])
    runs = {k[0] for _, k in moved}
    print(f"{len(a) - len(moved)} of {len(a)} metric values identical; {len(moved)} moved, in")
    print(f"{len(runs)} run(s): {', '.join(sorted(runs)) or '-'}")
    if moved:
        pp = [d for d, _ in moved]
        print(f"moved by median {sorted(pp)[len(pp) // 2]:.2f} pp, at most {max(pp):.2f} pp")
        for d, k in moved[::-1][:10]:
            print(f"  {d:5.2f} pp  {'/'.join(k)} (stderr {100 * a[k][1]:.1f} pp)")


def _rows(db: Path) -> list[tuple[tuple[str, str, str], float, float]]:
    with sqlite3.connect(db) as c:
        q = "SELECT run_id, task, metric, value, stderr FROM metrics"
        return [((r, t, m), v, e or 0.0) for r, t, m, v, e in c.execute(q).fetchall()]


def tests() -> None:
    for name, env in PATHS.items():
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *QUALITY_TESTS]
        res = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
        print(f"{name:10s} {res.stdout.strip().splitlines()[-1]}")


def small() -> None:
    out = Path(tempfile.mkdtemp(prefix="fp-small-"))
    code = (
        "import sys; sys.path.insert(0, 'tests'); from sweep_configs import small_sweep; "
        "from rankscope.pipeline import run_sweep; "
        "run_sweep(small_sweep(sys.argv[1], sys.argv[2], 'analysis.enabled=false'), report=False)"
    )
    got = {}
    for name, env in PATHS.items():
        cache = out / "cache"
        subprocess.run(
            [sys.executable, "-c", code, str(out / name), str(cache)],
            env={**os.environ, **env, "RANKSCOPE_CACHE": str(cache)},
            check=True,
        )
        db = out / name / "results.sqlite"
        with sqlite3.connect(db) as c:
            losses = dict(c.execute("SELECT run_id, final_train_loss FROM runs").fetchall())
            q = "SELECT AVG(pred != 'None') FROM predictions WHERE run_id = ? AND task = ?"
            (fmt,) = c.execute(q, ("toy-arith__full__s0", "toy-arith")).fetchone()
        print(f"{name:10s} full SFT writes '#### N' in {100 * fmt:.0f} % of toy-arith answers")
        got[name] = ({k: v for k, v, _ in _rows(db)}, losses)
    ref, ref_loss = got["native"]
    for name, (vals, losses) in got.items():
        moved = sum(vals[k] != ref[k] for k in ref)
        rel = max(abs(losses[r] - ref_loss[r]) / abs(ref_loss[r]) for r in ref_loss if ref_loss[r])
        print(
            f"{name:10s} {len(ref) - moved} of {len(ref)} metric values as native; "
            f"final loss within {rel:.1e} (relative)"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["sweep"]:
        sweep(sys.argv[2:])
    elif sys.argv[1:2] == ["tests"]:
        tests()
    elif sys.argv[1:2] == ["small"]:
        small()
    else:
        sys.exit(__doc__)
