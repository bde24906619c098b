"""Benchmark the spectral-analysis shortcuts against their dense baselines.

(a) ``lora_delta_singular_values`` (QR of the LoRA factors + r×r SVD) vs the baseline
    "dense SVD of W1−W0" (values only, LAPACK, the cheapest dense route);
(b) ``top_k_svd`` (block-Krylov / randomized) vs the baseline "full SVD" on a d×d
    matrix with a pretrained-like spectrum: power-law signal 10·(1+i)^-1 plus a
    Gaussian noise bulk (σ_k for k=64 lies inside the flat bulk: the hard case).

Timings are the minimum over ``--repeat`` runs after one warm-up call. On a shared or
busy machine, pin BLAS threads (``OPENBLAS_NUM_THREADS=1``): an oversubscribed
multi-threaded OpenBLAS can be 10-50× slower and makes every ratio meaningless.

    python benchmarks/spectral.py --d 1024 --ranks 8 64 --k 64 --repeat 3
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from rankscope.analysis.spectral import (
    lora_delta_singular_values,
    singular_values,
    top_k_svd,
)


def best_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Minimum wall time over ``repeat`` calls (after one warm-up) and the last result."""
    result = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def pretrained_like(d: int, rng: np.random.Generator) -> np.ndarray:
    """d×d matrix: power-law singular values 10/(1+i) plus i.i.d. N(0, 0.01²) noise."""
    u, _ = np.linalg.qr(rng.standard_normal((d, d)))
    v, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s = 10.0 / (1.0 + np.arange(d))
    return (u * s) @ v.T + 0.01 * rng.standard_normal((d, d))


def max_rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(got - ref) / np.abs(ref)))


def bench_lora(d: int, r: int, w0: np.ndarray, repeat: int, rng: np.random.Generator) -> dict:
    B = 0.01 * rng.standard_normal((d, r))
    A = rng.standard_normal((r, d)) / np.sqrt(d)
    scale = 2.0  # lora_alpha / r with alpha = 2r
    w1 = w0 + scale * B @ A
    t_dense, dense = best_time(lambda: singular_values(w1 - w0), repeat)
    t_fact, fact = best_time(lambda: lora_delta_singular_values(B, A, scale), repeat)
    return {
        "case": f"LoRA spectrum d={d} r={r}",
        "baseline": "dense SVD of W1-W0",
        "t_base": t_dense,
        "t_ours": t_fact,
        "err": max_rel_err(fact, dense[:r]),
    }


def bench_topk(m: np.ndarray, k: int, method: str, args: argparse.Namespace) -> dict:
    t_full, full = best_time(lambda: np.linalg.svd(m, full_matrices=False), args.repeat)

    def ours() -> Any:
        return top_k_svd(
            m, k, oversample=args.oversample, n_iter=args.n_iter, seed=args.seed, method=method
        )

    t_ours, (_, s, _) = best_time(ours, args.repeat)
    return {
        "case": f"top-{k} {method} (p={args.oversample}, q={args.n_iter}) d={m.shape[0]}",
        "baseline": "full SVD",
        "t_base": t_full,
        "t_ours": t_ours,
        "err": max_rel_err(s, full[1][:k]),
    }


def print_table(rows: list[dict]) -> None:
    head = f"{'case':<44} {'baseline':<20} {'base_s':>8} {'ours_s':>8} {'ratio':>8}"
    head += f" {'max_rel_err':>12}"
    print(head)
    print("-" * len(head))
    for row in rows:
        ratio = row["t_base"] / row["t_ours"]
        print(
            f"{row['case']:<44} {row['baseline']:<20} {row['t_base']:8.4f} "
            f"{row['t_ours']:8.4f} {ratio:7.1f}x {row['err']:12.2e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=1024)
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--oversample", type=int, default=10)
    parser.add_argument("--n-iter", type=int, default=8)
    parser.add_argument(
        "--methods", nargs="+", default=["krylov", "randomized"], help="top_k_svd methods"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    w0 = pretrained_like(args.d, rng)
    rows = [bench_lora(args.d, r, w0, args.repeat, rng) for r in args.ranks]
    rows += [bench_topk(w0, args.k, method, args) for method in args.methods]
    print_table(rows)


if __name__ == "__main__":
    main()
