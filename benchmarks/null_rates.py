"""How often the report's paired tests call a difference that is not there.

    python benchmarks/null_rates.py [--sims 500] [--items 700]

Part 1, one comparison under H0: k seeds of a tuned model against one deterministic base run
on the same items. Item difficulties are uniform in [0.2, 0.8]; a seed shifts every item's
probability of being right by a normal draw of sd `seed sd` around 0, so the tuned model's
expected score equals the base model's. Printed: the share of simulations with p < 0.05 for

* `seed_t`: what the report uses with several seeds (`rankscope.stats.seed_t`);
* `bootstrap`: the hierarchical paired bootstrap it used before (`stats.paired_bootstrap`,
  1,000 replicates; seeds and items resampled);
* `pooled-satt`: one t test on the pooled seed + item variance with Welch-Satterthwaite df
  over both components (the usual mixed-model recipe), written out here for comparison.

A valid 5 % test stays near 0.05 (the Monte Carlo standard error of a rate near 0.05 over
500 simulations is ~0.01).

Part 2, the recommendation's winner's curse: 8 configurations of equal accuracy on 200
validation items, the best by mean chosen and every other compared with it on the same items
by the report's test (`report.significance.PairedTests`), Holm over the 7; printed: the
share of sweeps where some configuration is called significantly worse (5 % nominal).

No baseline timing here: the ratio that matters is the rate against the nominal 0.05.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from scipy import stats as st

from rankscope.report.significance import PairedTests
from rankscope.stats import holm_adjust, paired_bootstrap, seed_t


def pooled_satterthwaite(a: np.ndarray, b: np.ndarray) -> float:
    """p of the pooled-variance t with Satterthwaite df over seeds and items (b: one run)."""
    k, n = a.shape
    v_seed = float(a.mean(axis=1).var(ddof=1)) / k
    v_item = float((a.mean(axis=0) - b[0]).var(ddof=1)) / n
    v = v_seed + v_item
    df = v**2 / (v_seed**2 / (k - 1) + v_item**2 / (n - 1))
    return float(2 * st.t.sf(abs(a.mean() - b.mean()) / math.sqrt(v), df))


def one_comparison(k: int, seed_sd: float, sims: int, n: int, rng) -> tuple[float, ...]:
    hits = np.zeros(3)
    for s in range(sims):
        ease = rng.uniform(0.2, 0.8, n)
        base = (rng.random(n) < ease).astype(float)[None, :]
        shift = rng.normal(0.0, seed_sd, k)[:, None]
        tuned = (rng.random((k, n)) < np.clip(ease + shift, 0, 1)).astype(float)
        ps = (
            seed_t(tuned, base)[3],
            paired_bootstrap(tuned, base, n_boot=1000, seed=s)[3],
            pooled_satterthwaite(tuned, base),
        )
        hits += np.array(ps) < 0.05
    return tuple(hits / sims)


def winners_curse(k: int, sims: int, rng, n: int = 200, m: int = 8) -> float:
    boot = PairedTests(2000)
    some = 0
    for s in range(sims):
        ease = rng.uniform(0.2, 0.8, n)
        runs = [(rng.random((k, n)) < ease).astype(float) for _ in range(m)]
        best = int(np.argmax([r.mean() for r in runs]))
        comps = [boot.compare(runs[j], runs[best], seed=1000 * s + j) for j in range(m)]
        comps = [c for j, c in enumerate(comps) if j != best]
        some += any(c.significant for c in holm_adjust(comps))
    return some / sims


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sims", type=int, default=500)
    ap.add_argument("--items", type=int, default=700)
    args = ap.parse_args()
    rng = np.random.default_rng(2026)
    print(f"H0, k seeds vs one base run, {args.items} items, {args.sims} simulations per row")
    print(f"{'seeds':>5} {'seed sd':>8} {'seed_t':>8} {'bootstrap':>10} {'pooled-satt':>12}")
    for k in (2, 3, 5):
        for sd in (0.0, 0.02, 0.05, 0.1, 0.2):
            rates = one_comparison(k, sd, args.sims, args.items, rng)
            print(f"{k:>5} {sd:>8.2f} " + f"{rates[0]:>8.3f} {rates[1]:>10.3f} {rates[2]:>12.3f}")
    print("winner's curse: 8 equal configurations, 200 validation items, Holm over 7")
    for k in (1, 3):
        rate = winners_curse(k, min(args.sims, 300), rng)
        print(f"  {k} seed(s) each: some configuration 'significantly worse' in {rate:.3f}")


if __name__ == "__main__":
    main()
