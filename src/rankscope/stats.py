"""How sure the report is: intervals over seeds, paired comparisons on shared eval items, and
the multiple-comparison correction over a report's family of comparisons.

The numbers this module sees are per-item scores (0/1 correctness, as fractions 0..1) of one
or more *seeds* of a configuration on a fixed list of eval items. Two sources of noise matter:
the training seed (a new run gives a different model) and the finite item sample (another
draw of items from the task would give another accuracy). Every test here accounts for the
items; those that see several seeds account for the seeds too.

What each piece is for
----------------------
`mean_ci`
    A configuration's mean over seeds, with a Student-t interval (`scipy.stats.t.ppf`): the
    seeds are the replicates, so the interval says how much a *new seed* could move the
    mean. With one seed nothing can be said about seed noise and the bounds are None.
`item_se`
    The standard error of one run's accuracy from its items alone: sd/sqrt(n) with the
    population sd (ddof=0). On 0/1 data that is exactly sqrt(p(1-p)/n), the textbook binomial
    formula, and the same expression serves graded (non-binary) scores, so one formula covers
    both. (ddof=0 rather than 1 so the 0/1 case matches the binomial formula exactly.)
`paired_bootstrap`
    The difference between two configurations A and B evaluated on the *same* items, with a
    95% interval and a p-value. Hierarchical: every replicate resamples A's seeds with
    replacement, B's seeds with replacement (independently: seed 0 of A has nothing to do
    with seed 0 of B), and the item columns with replacement, the *same* item indices for A
    and B (the items are the pairing, so item difficulty cancels out of the difference,
    which is what makes paired tests much sharper than comparing two separate intervals).
    diff* = (mean of the resampled A block) - (mean of the resampled B block).
    Implementation: resampling seeds with replacement is the same as giving each seed a
    multinomial count; so A's resampled column means are (counts_A @ A) / seeds_A, and the
    resampled item mean is (item counts @ column diffs) / n_items. Counts come from
    `np.bincount` on uniform integer draws (exactly multinomial), replicates are processed in
    chunks to bound memory, and everything is drawn from `np.random.default_rng(seed)`, so a
    seed gives the same answer every time.
    Interval: the percentile bootstrap (the alpha/2 and 1-alpha/2 quantiles of diff*). It is
    transformation-respecting, needs no variance formula for the two-level design (where an
    analytic SE would need a variance-components model), and on differences of mean accuracy
    over hundreds of items the distribution is close to symmetric, so its known bias issues
    (which BCa corrects) are small; BCa's jackknife over a two-level design is not well
    defined anyway.
    p-value: the inversion of the percentile interval, i.e. the smallest alpha whose
    (1-alpha) percentile interval excludes 0: p = 2 * min(P*(diff* <= 0), P*(diff* >= 0)),
    capped at 1, computed on the uncentred bootstrap distribution (consistent with the
    interval: p < 0.05 exactly when the 95% interval excludes 0, up to quantile
    interpolation). It is floored at 1/(n_boot+1): with n_boot replicates a p of 0 is never
    supported, only "below the resolution".
    The report uses it for one seed against one; with several seeds `seed_t` (below).
`mcnemar_exact`
    When each side has exactly one seed and 0/1 scores, the exact McNemar test is the
    classical paired test: only discordant items (one right, the other wrong) carry
    information, and under H0 each discordant item is equally likely to go either way, so
    n01 ~ Binomial(n01 + n10, 1/2). Exact (binomial) rather than the chi-square version
    because eval differences often have few discordant pairs.
`seed_t`
    A vs B when either side has several seeds: a difference must stand out against *both*
    noise sources, each by its own t test, and p is the larger of the two. The seeds: the
    per-seed means (Welch's t on them, Welch-Satterthwaite df; a one-seed side is a constant,
    so against the base model it is the one-sample t of the seeds' differences, k - 1 df).
    The items: the paired t over the per-item differences of the seed-averaged scores
    (n - 1 df). The interval is the wider of the two, so it excludes 0 exactly when p <
    (1 - level). Why not one variance for both: the seed variance of 2-5 seeds is so noisy
    that a pooled test with Satterthwaite df is fooled when it comes out small by chance
    (the items' df then take over).
    Simulated under H0 (`benchmarks/null_rates.py`: 700 items, k seeds against one
    deterministic base run, seed sd 0 to 20 pp, 500 simulations per cell; BENCHMARKS.md),
    the share called significant at 5 %: the hierarchical bootstrap of the first design
    3-26 % with 3 seeds (3-42 % with 2, 3-16 % with 5); one t test on the pooled seed + item
    variance with Welch-Satterthwaite df over both (the mixed-model recipe) 3-7.4 % with 3
    seeds, 3-16 % with 2; this test 3.6-5.2 % with 3 seeds, 1.6-7.4 % over 2-5. Pooling
    with the seeds' df alone would be valid too, but then a 30-pp gain of 3 steady seeds is
    not significant (the t quantile of 2 df is 4.3). `tests/test_stats.py` checks the 2- and
    3-seed rates against the bootstrap's.
`compare`
    One `Comparison` of A vs B: `seed_t` when either side has several seeds; one seed
    against one: the paired bootstrap's interval over items, and the exact McNemar p on 0/1
    scores (the bootstrap's p on graded ones).
`holm` / `holm_adjust`
    A report makes many comparisons; Holm's step-down correction controls the family-wise
    error rate at 5% under any dependence between the tests (Bonferroni's guarantee) while
    being uniformly more powerful than Bonferroni. Adjusted p-values: sort ascending,
    p_(i) * (m - i + 1), running maximum, cap 1, back in the input order.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as _st

ALPHA = 0.05
_CHUNK_CELLS = 2_000_000
MIN_TAIL = 10
"""`PairedTests`: below this many replicates beyond 0 the p is the normal tail."""
"""Replicates are drawn in chunks of about this many (replicate x item) cells (~16 MB of
float64 per array), so memory stays bounded for large item sets."""


@dataclass(frozen=True)
class Interval:
    """A point estimate over `n` values (seeds) with its confidence interval."""

    est: float
    lo: float | None
    hi: float | None
    n: int

    @property
    def half_width(self) -> float | None:
        if self.lo is None or self.hi is None:
            return None
        return (self.hi - self.lo) / 2


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of A against B on the same items; diff = mean(A) - mean(B)."""

    diff: float
    lo: float
    hi: float
    p: float
    test: str
    n_items: int
    n_seeds_a: int
    n_seeds_b: int
    p_adj: float | None = None

    @property
    def significant(self) -> bool:
        """Below 0.05 after correction (before it when no correction was applied)."""
        return (self.p if self.p_adj is None else self.p_adj) < ALPHA


def _vector(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D sequence, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{what}: no values")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: non-finite values")
    return x


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def mean_ci(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean over seeds with a Student-t interval; bounds None with a single seed."""
    _check_level(level)
    x = _vector(values, "mean_ci")
    n = int(x.size)
    est = float(x.mean())
    if n < 2:
        return Interval(est, None, None, n)
    sd = float(x.std(ddof=1))
    half = float(_st.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(est, est - half, est + half, n)


def item_se(correct: Sequence[bool | int | float]) -> float:
    """Standard error of a mean of per-item scores, sd(ddof=0)/sqrt(n) (= sqrt(p(1-p)/n)
    on 0/1 data)."""
    x = _vector(correct, "item_se")
    return float(x.std(ddof=0) / math.sqrt(x.size))


def _matrix(x, what: str) -> np.ndarray:
    m = np.asarray(x, dtype=float)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"{what}: expected (seeds, items) scores, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{what}: non-finite scores")
    return m


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    ma, mb = _matrix(a, "a"), _matrix(b, "b")
    if ma.shape[1] != mb.shape[1]:
        raise ValueError(f"a and b must score the same items: {ma.shape[1]} vs {mb.shape[1]} items")
    return ma, mb


def _counts(rng: np.random.Generator, reps: int, k: int) -> np.ndarray:
    """(reps, k) multinomial counts of k draws with replacement from k things, per replicate."""
    draws = rng.integers(0, k, size=(reps, k))
    draws += np.arange(reps)[:, None] * k
    return np.bincount(draws.ravel(), minlength=reps * k).reshape(reps, k)


def _boot_diffs(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """n_boot hierarchical replicates of mean(A) - mean(B) (see the module docstring)."""
    rng = np.random.default_rng(seed)
    (sa, n), sb = a.shape, b.shape[0]
    chunk = max(1, _CHUNK_CELLS // max(n, sa, sb))
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        reps = min(chunk, n_boot - start)
        cols_a = _counts(rng, reps, sa) @ a / sa if sa > 1 else np.broadcast_to(a, (reps, n))
        cols_b = _counts(rng, reps, sb) @ b / sb if sb > 1 else np.broadcast_to(b, (reps, n))
        items = _counts(rng, reps, n)
        out[start : start + reps] = np.einsum("ij,ij->i", items, cols_a - cols_b) / n
    return out


def _interval_p(d: np.ndarray, level: float) -> tuple[float, float, int, float]:
    """(lo, hi, tail, p) of bootstrap replicates `d` of a difference: the percentile
    interval at `level`, the replicates on the far side of 0, and the two-sided
    percentile-inversion p floored at 1/(n+1)."""
    alpha = 1 - level
    lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2])
    tail = min(np.count_nonzero(d <= 0), np.count_nonzero(d >= 0))
    p = max(1 / (d.size + 1), min(1.0, 2 * tail / d.size))
    return float(lo), float(hi), int(tail), float(p)


def paired_bootstrap(
    a, b, n_boot: int = 10000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float, float]:
    """(diff, lo, hi, p) of mean(a) - mean(b) by the hierarchical paired bootstrap.

    a: (seeds_a, n_items) and b: (seeds_b, n_items) per-item scores on the same items in the
    same column order (1-D: one seed). Percentile interval at `level`; p is the two-sided
    percentile-inversion p, floored at 1/(n_boot+1).
    """
    _check_level(level)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    ma, mb = _pair(a, b)
    diff = float(ma.mean() - mb.mean())
    lo, hi, _, p = _interval_p(_boot_diffs(ma, mb, n_boot, seed), level)
    return diff, lo, hi, p


def _binary(x: np.ndarray) -> bool:
    return bool(np.all((x == 0) | (x == 1)))


def mcnemar_exact(a, b) -> float:
    """Exact two-sided McNemar p of two 0/1 score vectors on the same items (1.0 when no
    item is discordant)."""
    x, y = _vector(a, "a"), _vector(b, "b")
    if x.size != y.size:
        raise ValueError(f"a and b must score the same items: {x.size} vs {y.size}")
    if not (_binary(x) and _binary(y)):
        raise ValueError("mcnemar_exact needs 0/1 scores")
    n01 = int(np.count_nonzero((x == 0) & (y == 1)))
    n10 = int(np.count_nonzero((x == 1) & (y == 0)))
    if n01 + n10 == 0:
        return 1.0
    return float(_st.binomtest(n01, n01 + n10, 0.5).pvalue)


def seed_t(a, b, level: float = 0.95) -> tuple[float, float, float, float, float]:
    """(diff, lo, hi, p, df) of mean(a) - mean(b) against both noise sources (module
    docstring): a (seeds_a, n_items), b (seeds_b, n_items) on the same items, at least one
    side with two or more seeds. `df` is the seed test's (Welch-Satterthwaite; k - 1 with
    one multi-seed side)."""
    _check_level(level)
    ma, mb = _pair(a, b)
    seeds = [
        (float(m.mean(axis=1).var(ddof=1)) / m.shape[0], m.shape[0] - 1)
        for m in (ma, mb)
        if m.shape[0] > 1
    ]
    if not seeds:
        raise ValueError("seed_t needs several seeds on at least one side")
    n = ma.shape[1]
    v_seed = sum(v for v, _ in seeds)
    df = v_seed**2 / sum(v**2 / d for v, d in seeds) if v_seed > 0 else float(seeds[0][1])
    v_item = float((ma.mean(axis=0) - mb.mean(axis=0)).var(ddof=1)) / n if n > 1 else 0.0
    diff = float(ma.mean() - mb.mean())
    q = (1 + level) / 2
    p, half = 0.0, 0.0
    for v, d in ((v_seed, df), (v_item, n - 1)):
        if v > 0:
            se = math.sqrt(v)
            p = max(p, float(2 * _st.t.sf(abs(diff) / se, d)))
            half = max(half, float(_st.t.ppf(q, d)) * se)
        elif diff == 0:
            p = 1.0
    return diff, diff - half, diff + half, p, df


def compare(a, b, n_boot: int = 10000, seed: int = 0) -> Comparison:
    """A vs B on the same items: `seed_t` when either side has several seeds; one seed
    against one: the paired bootstrap's interval over items, its p on graded scores and the
    exact McNemar p on 0/1 scores."""
    ma, mb = _pair(a, b)
    if _several_seeds(ma, mb):
        return _seed_comparison(ma, mb)
    diff, lo, hi, p = paired_bootstrap(ma, mb, n_boot=n_boot, seed=seed)
    return _comparison(ma, mb, diff, lo, hi, p)


def _several_seeds(ma: np.ndarray, mb: np.ndarray) -> bool:
    """Which test a comparison gets (`compare` and `PairedTests` alike)."""
    return max(ma.shape[0], mb.shape[0]) > 1


def _result(ma: np.ndarray, mb: np.ndarray, diff, lo, hi, p, test: str) -> Comparison:
    k_a, k_b = int(ma.shape[0]), int(mb.shape[0])
    return Comparison(diff, lo, hi, p, test, int(ma.shape[1]), k_a, k_b)


def _seed_comparison(ma: np.ndarray, mb: np.ndarray) -> Comparison:
    diff, lo, hi, p, _ = seed_t(ma, mb)
    return _result(ma, mb, diff, lo, hi, p, "seed-t")


def _comparison(
    ma: np.ndarray, mb: np.ndarray, diff: float, lo: float, hi: float, p: float
) -> Comparison:
    """The Comparison of one seed against one: the bootstrap's p, or the exact McNemar p on
    0/1 scores."""
    if _binary(ma) and _binary(mb):
        return _result(ma, mb, diff, lo, hi, mcnemar_exact(ma[0], mb[0]), "mcnemar")
    return _result(ma, mb, diff, lo, hi, p, "bootstrap")


class PairedTests:
    """`compare` for many comparisons at once (a report's summary): `seed_t` where a side has
    several seeds; for one seed against one the same paired bootstrap and McNemar rule,
    computed in another order. The item-resampling counts W (n_boot x items) depend only on
    the number of items, so they are drawn once per item count and shared. Sharing W
    correlates the Monte Carlo error of comparisons, not their validity (Holm holds under
    any dependence). Where fewer than `MIN_TAIL` replicates fall beyond 0 the bootstrap
    cannot resolve p (its floor is 1/(n_boot+1)), and p is the normal tail of the
    replicates, 2 Phi(-|diff| / sd*)."""

    def __init__(self, n_boot: int = 2000, level: float = 0.95) -> None:
        self.n_boot, self.level = n_boot, level
        self._weights: dict[int, np.ndarray] = {}

    def weights(self, n: int) -> np.ndarray:
        """(n_boot, n) item counts, drawn once per n (in chunks of ~2M cells)."""
        if n not in self._weights:
            rng = np.random.default_rng(zlib.crc32(f"items|{n}".encode()))
            chunk = max(1, _CHUNK_CELLS // n)
            parts = [
                _counts(rng, min(chunk, self.n_boot - start), n).astype(np.float32)
                for start in range(0, self.n_boot, chunk)
            ]
            self._weights[n] = np.concatenate(parts)
        return self._weights[n]

    def compare(self, a: np.ndarray, b: np.ndarray, seed: int) -> Comparison:
        """A vs B, (seeds, items) each on the same items: as `compare`."""
        if _several_seeds(a, b):
            return _seed_comparison(*_pair(a, b))
        n = a.shape[1]
        sums = self.weights(n) @ np.vstack([a, b]).T.astype(np.float32)  # one pass over W
        d = (sums[:, 0].astype(float) - sums[:, 1].astype(float)) / n
        diff = float(a.mean() - b.mean())
        lo, hi, tail, p = _interval_p(d, self.level)
        if tail < MIN_TAIL:  # not resolved by the replicates: the normal tail
            sd = float(d.std())
            p = float(2 * _st.norm.sf(abs(diff) / sd)) if sd > 0 else float(diff == 0)
        return _comparison(a, b, diff, lo, hi, p)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order (monotone in p, capped at 1)."""
    p = np.asarray(pvalues, dtype=float)
    if p.size == 0:
        return []
    if p.ndim != 1 or np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"holm: p-values must be a 1-D sequence in [0, 1], got {pvalues!r}")
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    adj = np.empty(m)
    adj[order] = np.minimum(stepped, 1.0)
    return [float(v) for v in adj]


def holm_adjust(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """The comparisons with p_adj filled, Holm-corrected over all of them together."""
    adj = holm([c.p for c in comparisons])
    return [replace(c, p_adj=q) for c, q in zip(comparisons, adj, strict=True)]
