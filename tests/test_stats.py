"""rankscope.stats against independent references: scipy's own routines, hand-computed values,
textbook tables, the normal approximation and a naive loop bootstrap."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy import stats as st

from rankscope.stats import (
    Comparison,
    Interval,
    compare,
    holm,
    holm_adjust,
    item_se,
    mcnemar_exact,
    mean_ci,
    paired_bootstrap,
    seed_t,
)

# --- mean_ci / item_se ---------------------------------------------------------------------


def test_mean_ci_hand_computed():
    ci = mean_ci([1, 2, 3])
    # mean 2, sd 1, t(0.975, df=2) = 4.302653 -> half-width 4.302653 / sqrt(3) = 2.48414
    assert ci.est == pytest.approx(2.0)
    assert ci.half_width == pytest.approx(2.48414, abs=1e-5)
    assert (ci.lo, ci.hi) == pytest.approx((2 - 2.48414, 2 + 2.48414), abs=1e-5)
    assert ci.n == 3


@pytest.mark.parametrize("level", [0.95, 0.9, 0.99])
def test_mean_ci_matches_scipy_t_interval(level):
    x = np.array([0.61, 0.64, 0.58, 0.66, 0.63])
    lo, hi = st.t.interval(level, len(x) - 1, loc=x.mean(), scale=st.sem(x))
    ci = mean_ci(list(x), level=level)
    assert ci.est == pytest.approx(x.mean())
    assert (ci.lo, ci.hi) == pytest.approx((lo, hi), rel=1e-12)


def test_mean_ci_single_seed_has_no_interval():
    ci = mean_ci([0.7])
    assert ci == Interval(0.7, None, None, 1)
    assert ci.half_width is None


def test_mean_ci_equal_values_collapse():
    ci = mean_ci([0.5, 0.5, 0.5])
    assert ci.lo == ci.hi == ci.est == 0.5
    assert ci.half_width == 0.0


def test_mean_ci_rejects_empty():
    with pytest.raises(ValueError):
        mean_ci([])


def test_item_se_binary_is_binomial_formula():
    # p = 0.4 over n = 5: sqrt(0.4 * 0.6 / 5) = 0.2190890
    assert item_se([1, 1, 0, 0, 0]) == pytest.approx(0.2190890, abs=1e-7)
    assert item_se([True, False, True, True]) == pytest.approx(math.sqrt(0.75 * 0.25 / 4))


def test_item_se_graded_scores():
    # population sd of [0.5, 1.0] is 0.25 -> 0.25 / sqrt(2)
    assert item_se([0.5, 1.0]) == pytest.approx(0.25 / math.sqrt(2))
    assert item_se([1, 1, 1]) == 0.0


# --- mcnemar_exact -------------------------------------------------------------------------


def _table(n00: int, n01: int, n10: int, n11: int) -> tuple[np.ndarray, np.ndarray]:
    """0/1 vectors a, b with the given 2x2 counts (n01: a wrong, b right)."""
    a = [0] * n00 + [0] * n01 + [1] * n10 + [1] * n11
    b = [0] * n00 + [1] * n01 + [0] * n10 + [1] * n11
    return np.array(a), np.array(b)


def test_mcnemar_textbook_table():
    # 2 vs 8 discordant: p = 2 * P(Bin(10, 1/2) <= 2) = 2 * 56 / 1024 = 0.109375
    a, b = _table(20, 2, 8, 30)
    assert mcnemar_exact(a, b) == pytest.approx(0.109375, abs=1e-12)
    assert mcnemar_exact(b, a) == pytest.approx(0.109375, abs=1e-12)


def test_mcnemar_matches_binomtest():
    a, b = _table(100, 13, 27, 60)
    assert mcnemar_exact(a, b) == pytest.approx(st.binomtest(13, 40, 0.5).pvalue, rel=1e-12)


def test_mcnemar_no_discordant_pairs():
    a, b = _table(5, 0, 0, 7)
    assert mcnemar_exact(a, b) == 1.0


def test_mcnemar_rejects_bad_input():
    with pytest.raises(ValueError):
        mcnemar_exact([0, 1, 1], [0, 1])
    with pytest.raises(ValueError):
        mcnemar_exact([0, 0.5], [0, 1])


def test_mcnemar_matches_the_exact_binomial_sum():
    # the exact two-sided McNemar p, summed by hand over Bin(n01 + n10, 1/2): twice the
    # smaller tail, at most 1 (independent of scipy's binomtest that the code calls)
    for n01, n10 in [(2, 8), (13, 27), (5, 5), (0, 9), (30, 1)]:
        n, k = n01 + n10, min(n01, n10)
        ref = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
        a, b = _table(10, n01, n10, 10)
        assert mcnemar_exact(a, b) == pytest.approx(ref, rel=1e-12)
        assert mcnemar_exact(b, a) == pytest.approx(ref, rel=1e-12)  # symmetric


# --- holm ----------------------------------------------------------------------------------


def test_holm_hand_computed():
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.02, 0.5]) == pytest.approx([0.04, 0.5])
    assert holm([0.01, 0.01]) == pytest.approx([0.02, 0.02])
    assert holm([0.3]) == pytest.approx([0.3])


def test_holm_caps_at_one_and_empty():
    assert holm([0.5, 0.6, 0.9]) == [1.0, 1.0, 1.0]
    assert holm([]) == []


def test_holm_monotone_and_bounded():
    p = np.random.default_rng(3).random(25) ** 3
    adj = np.array(holm(list(p)))
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0)
    assert np.all(adj >= p)
    assert np.all(adj <= np.minimum(1, len(p) * p) + 1e-15)  # never above Bonferroni


def test_holm_rejects_invalid():
    with pytest.raises(ValueError):
        holm([0.1, 1.5])
    with pytest.raises(ValueError):
        holm([float("nan")])


# --- paired_bootstrap ----------------------------------------------------------------------


def test_bootstrap_identical_groups():
    a = np.random.default_rng(0).integers(0, 2, 300)
    diff, lo, hi, p = paired_bootstrap(a, a.copy(), n_boot=2000)
    assert diff == 0.0 and lo <= 0 <= hi and p == 1.0
    seeds = np.random.default_rng(1).integers(0, 2, (3, 300))
    diff, lo, hi, p = paired_bootstrap(seeds, seeds.copy(), n_boot=2000)
    assert diff == 0.0 and lo < 0 < hi and p > 0.5


def _large_gap() -> tuple[np.ndarray, np.ndarray]:
    """400 items: B right on the first 200, A right on those and 80 more."""
    b = np.zeros(400)
    b[:200] = 1
    a = np.zeros(400)
    a[:280] = 1
    return a, b


def test_bootstrap_large_paired_difference_matches_normal_approximation():
    a, b = _large_gap()
    diff, lo, hi, p = paired_bootstrap(a, b, n_boot=10000, seed=0)
    d = a - b
    se = d.std(ddof=0) / math.sqrt(len(d))  # 0.4 / 20 = 0.02
    z = st.norm.ppf(0.975)
    assert diff == pytest.approx(0.2)
    assert lo > 0
    assert p <= 1e-3
    assert p >= 1 / 10001  # floored, never 0
    assert (lo, hi) == pytest.approx((0.2 - z * se, 0.2 + z * se), abs=0.006)


def test_bootstrap_deterministic_for_a_seed():
    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 2, (3, 200)), rng.integers(0, 2, (2, 200))
    assert paired_bootstrap(a, b, n_boot=3000, seed=7) == paired_bootstrap(
        a, b, n_boot=3000, seed=7
    )
    assert paired_bootstrap(a, b, n_boot=3000, seed=7) != paired_bootstrap(
        a, b, n_boot=3000, seed=8
    )


def _naive_bootstrap(a, b, n_boot, seed):
    """A loop reference of the hierarchical scheme, written independently of the module."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        sa = rng.integers(0, a.shape[0], a.shape[0])
        sb = rng.integers(0, b.shape[0], b.shape[0])
        items = rng.integers(0, a.shape[1], a.shape[1])
        out.append(a[np.ix_(sa, items)].mean() - b[np.ix_(sb, items)].mean())
    return np.array(out)


def test_bootstrap_matches_naive_loop_reference():
    rng = np.random.default_rng(11)
    item_ease = rng.random(300)
    a = (rng.random((3, 300)) < item_ease * np.array([[0.9], [1.1], [1.3]])).astype(float)
    b = (rng.random((2, 300)) < item_ease).astype(float)
    ref = _naive_bootstrap(a, b, 3000, seed=123)
    diff, lo, hi, _ = paired_bootstrap(a, b, n_boot=10000, seed=0)
    assert diff == pytest.approx(a.mean() - b.mean())
    ref_lo, ref_hi = np.quantile(ref, [0.025, 0.975])
    width = ref_hi - ref_lo
    assert lo == pytest.approx(ref_lo, abs=0.08 * width)
    assert hi == pytest.approx(ref_hi, abs=0.08 * width)


def test_bootstrap_resamples_the_seed_level():
    n = 500
    b = np.zeros(n)
    b[::2] = 1  # mean 0.5
    spread = np.zeros((3, n))
    for row, k in enumerate((150, 250, 350)):  # seed means 0.3, 0.5, 0.7
        spread[row, :k] = 1
    single = spread[1]  # one seed at the same overall mean, 0.5
    d3, lo3, hi3, _ = paired_bootstrap(spread, b, n_boot=4000)
    d1, lo1, hi1, _ = paired_bootstrap(single, b, n_boot=4000)
    assert d3 == pytest.approx(d1) == pytest.approx(0.0)
    assert hi3 - lo3 > 2 * (hi1 - lo1)
    # three identical seeds add no seed noise: the width is the single seed's
    _, lo_same, hi_same, _ = paired_bootstrap(np.tile(single, (3, 1)), b, n_boot=4000)
    assert hi_same - lo_same == pytest.approx(hi1 - lo1, rel=0.1)


def test_bootstrap_rejects_mismatched_items():
    with pytest.raises(ValueError):
        paired_bootstrap(np.ones((2, 10)), np.ones((2, 11)))


def test_compare_one_seed_each_uses_mcnemar():
    a, b = _table(20, 2, 8, 30)
    c = compare(a, b, n_boot=2000)
    assert c.test == "mcnemar"
    assert c.p == pytest.approx(0.109375)
    assert c.diff == pytest.approx((38 - 32) / 60)
    assert c.lo <= c.diff <= c.hi
    assert (c.n_items, c.n_seeds_a, c.n_seeds_b, c.p_adj) == (60, 1, 1, None)


def test_compare_several_seeds_uses_the_seed_t_test():
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 2, (2, 100)), rng.integers(0, 2, 100)
    c = compare(a, b, n_boot=2000, seed=4)
    diff, lo, hi, p, _ = seed_t(a, b[None, :])
    assert c.test == "seed-t"
    assert (c.diff, c.lo, c.hi, c.p) == (diff, lo, hi, p)
    assert (c.n_items, c.n_seeds_a, c.n_seeds_b) == (100, 2, 1)
    assert compare(b, a, n_boot=500).test == "seed-t"


# --- seed_t --------------------------------------------------------------------------------


def _t_p(diff: float, var: float, df: float) -> float:
    return 2 * st.t.sf(abs(diff) / math.sqrt(var), df)


def test_seed_t_hand_computed_one_multi_seed_side():
    a = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=float)  # seeds .25 .5 .75
    b = np.array([[0, 1, 0, 0]], dtype=float)  # one run, .25
    v_seed = statistics.variance([0.25, 0.5, 0.75]) / 3  # one-sample t of the seeds, 2 df
    delta = [1 - 0, 2 / 3 - 1, 1 / 3 - 0, 0 - 0]  # seed-averaged A minus B, per item
    v_item = statistics.variance(delta) / 4  # paired t over items, 3 df
    diff, lo, hi, p, df = seed_t(a, b)
    assert diff == pytest.approx(0.25) and df == 2
    assert p == pytest.approx(max(_t_p(0.25, v_seed, 2), _t_p(0.25, v_item, 3)))
    half = max(st.t.ppf(0.975, 2) * math.sqrt(v_seed), st.t.ppf(0.975, 3) * math.sqrt(v_item))
    assert (lo, hi) == pytest.approx((0.25 - half, 0.25 + half))


def test_seed_t_hand_computed_two_multi_seed_sides_welch_df():
    a = np.array([[1, 1, 0, 0, 1], [1, 0, 0, 0, 1], [1, 1, 1, 0, 1]], dtype=float)
    b = np.array([[0, 1, 0, 0, 0], [0, 0, 0, 1, 1]], dtype=float)
    va = statistics.variance([0.6, 0.4, 0.8]) / 3
    vb = statistics.variance([0.2, 0.4]) / 2
    df_ref = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 1)  # Welch-Satterthwaite over the seeds
    v_item = statistics.variance(list(a.mean(axis=0) - b.mean(axis=0))) / 5
    diff, lo, hi, p, df = seed_t(a, b)
    assert diff == pytest.approx(0.3) and df == pytest.approx(df_ref)
    assert p == pytest.approx(max(_t_p(0.3, va + vb, df_ref), _t_p(0.3, v_item, 4)))
    assert (lo < 0) == (p > 0.05)  # the interval and the p agree


def test_seed_t_steady_seeds_large_gain_is_significant():
    """Seeds that agree and a gain far beyond the items' noise: the item test decides (a
    pooled test with the seeds' 2 df would not call even this significant)."""
    rng = np.random.default_rng(0)
    ease = rng.random(300)
    base = (ease < 0.4).astype(float)[None, :]
    tuned = np.array([(ease < 0.75) ^ (rng.random(300) < 0.03) for _ in range(3)], float)
    diff, lo, hi, p, _ = seed_t(tuned, base)
    assert diff > 0.3 and lo > 0.2 and p < 1e-3


def test_seed_t_refuses_one_seed_each_and_handles_no_spread():
    with pytest.raises(ValueError, match="several seeds"):
        seed_t(np.ones((1, 5)), np.zeros((1, 5)))
    same = np.tile([1.0, 0.0, 1.0], (3, 1))
    assert seed_t(same, same)[3] == 1.0  # nothing differs: p = 1, interval a point


def _null_rates(k: int, sims: int = 300, n: int = 700, seed_sd: float = 0.1):
    """Share of no-difference comparisons called significant at 5 %: k seeds of a tuned
    model (a seed effect of sd `seed_sd` around the base model's item probabilities)
    against one deterministic base run, by seed_t and by the hierarchical bootstrap."""
    rng = np.random.default_rng(2026)
    t_hits = boot_hits = 0
    for s in range(sims):
        ease = rng.uniform(0.2, 0.8, n)
        base = (rng.random(n) < ease).astype(float)[None, :]
        shift = rng.normal(0, seed_sd, k)[:, None]
        tuned = (rng.random((k, n)) < np.clip(ease + shift, 0, 1)).astype(float)
        t_hits += seed_t(tuned, base)[3] < 0.05
        boot_hits += paired_bootstrap(tuned, base, n_boot=1000, seed=s)[3] < 0.05
    return t_hits / sims, boot_hits / sims


@pytest.mark.parametrize("k", [2, 3])
def test_seed_t_holds_its_level_where_the_seed_bootstrap_did_not(k):
    t_rate, boot_rate = _null_rates(k)
    assert t_rate <= 0.09  # benchmarks/null_rates.py: at most 7.4 %; + ~1.3 binomial SEs
    assert boot_rate > 0.10  # the first design's bootstrap: 2-3x the nominal rate


def _cmp(p: float) -> Comparison:
    return Comparison(0.1, 0.0, 0.2, p, "bootstrap", 100, 3, 3)


def test_holm_adjust_fills_p_adj_and_significance():
    alone = holm_adjust([_cmp(0.03)])
    assert alone[0].p_adj == pytest.approx(0.03) and alone[0].significant
    family = holm_adjust([_cmp(0.03), _cmp(0.001), _cmp(0.04), _cmp(0.5)])
    assert [c.p_adj for c in family] == pytest.approx([0.09, 0.004, 0.09, 0.5])
    assert [c.significant for c in family] == [False, True, False, False]
    assert [c.p for c in family] == [0.03, 0.001, 0.04, 0.5]
    assert _cmp(0.03).significant and not _cmp(0.06).significant
    assert holm_adjust([]) == []
