"""The summary's claims: paired tests on known per-item predictions, Holm over all of them,
and the recommendation made on validation items.

The exact store has one seed per configuration, so every p is an exact McNemar p that the
test computes by hand from the constructed discordant items.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from report_synth import Run, flip, noisy, write_store
from scipy import stats as st

from rankscope.report import load_report_data
from rankscope.report.content import NO_DIFF, claim_text
from rankscope.report.keys import MethodKey
from rankscope.report.render import render_report
from rankscope.report.significance import (
    BASE,
    CROSS,
    FULL,
    IN,
    RETENTION,
    paired,
    recommendations,
    summary_claims,
)

N = 200
TASKS = ["tA", "tX", "tR"]
BASE_VEC = np.array([1] * 80 + [0] * (N - 80))  # 40 % on every task and split
LORA = MethodKey("lora", 8, alpha=16.0)
FULL_KEY = MethodKey("full")


def hand_holm(ps: list[float]) -> list[float]:
    m, out, running = len(ps), [0.0] * len(ps), 0.0
    for k, i in enumerate(sorted(range(m), key=lambda i: ps[i])):
        running = max(running, min(1.0, (m - k) * ps[i]))
        out[i] = running
    return out


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    """base 80/200 right everywhere; full SFT +100 items in-domain; LoRA r=8 +12 / -3
    in-domain (McNemar p ~ 0.035 alone); nothing else changes. On validation LoRA 101/200,
    full 100/200 (one item apart), base 80/200."""
    same = {t: BASE_VEC for t in TASKS}
    runs = [
        Run("base", "base", test=same, val={"tA": BASE_VEC}),
        Run(
            "full",
            "full",
            "tA",
            lr=1e-5,
            test={**same, "tA": flip(BASE_VEC, up=100)},
            val={"tA": flip(BASE_VEC, up=20)},
        ),
        Run(
            "lora8",
            "lora",
            "tA",
            rank=8,
            alpha=16.0,
            lr=1e-4,
            test={**same, "tA": flip(BASE_VEC, up=12, down=3)},
            val={"tA": flip(BASE_VEC, up=21)},
        ),
    ]
    path = tmp_path_factory.mktemp("exact") / "results.sqlite"
    write_store(path, runs, ["tA"], TASKS, "tR")
    return load_report_data(path)


def _claims(data) -> dict:
    return {(c.key, c.reference, c.kind): c for c in summary_claims(data)}


def test_the_summary_makes_exactly_the_promised_comparisons(exact) -> None:
    got = set(_claims(exact))
    want = {(FULL_KEY, BASE, k) for k in (IN, CROSS, RETENTION)}
    want |= {(LORA, BASE, k) for k in (IN, CROSS, RETENTION)}
    want |= {(LORA, FULL, IN), (LORA, FULL, RETENTION)}
    assert got == want
    cross = _claims(exact)[(LORA, BASE, CROSS)]
    assert cross.tasks == ("tX",) and cross.comparison.n_items == N


def test_large_difference_is_significant_and_null_is_not(exact) -> None:
    claims = _claims(exact)
    big = claims[(FULL_KEY, BASE, IN)].comparison
    assert big.diff == pytest.approx(0.5) and big.test == "mcnemar"
    assert big.significant and big.lo > 0
    assert big.p == pytest.approx(st.binomtest(0, 100, 0.5).pvalue)
    null = claims[(LORA, BASE, RETENTION)].comparison
    assert null.diff == 0 and null.p == 1.0 and not null.significant
    assert claim_text(null).startswith(NO_DIFF)
    assert claim_text(big).startswith("+50.0 pp [")


def test_holm_over_every_claim_turns_a_lone_p_into_no_difference(exact) -> None:
    claims = summary_claims(exact)
    raw = [c.comparison.p for c in claims]
    assert [c.comparison.p_adj for c in claims] == pytest.approx(hand_holm(raw))
    lone = _claims(exact)[(LORA, BASE, IN)].comparison
    p = st.binomtest(3, 15, 0.5).pvalue  # 12 items gained, 3 lost
    assert lone.p == pytest.approx(p) and p < 0.05
    assert lone.p_adj == pytest.approx(6 * p) and not lone.significant  # 3rd smallest of 8
    md = render_report(exact, [], [])["md"]
    summary = md[md.index("## Summary") : md.index("## Results")]
    row = next(ln for ln in summary.splitlines() if ln.startswith("| lora r=8 |"))
    assert f"| {NO_DIFF} (+4.5 pp [" in row
    assert "over all 8 comparisons" in summary
    full_row = next(ln for ln in summary.splitlines() if ln.startswith("| full |"))
    assert "| **+50.0 pp [" in full_row and "p < 0.001" in full_row


def test_recommendation_lists_the_indistinguishable_configurations(exact) -> None:
    (rec,) = recommendations(exact)
    assert rec.train_task == "tA" and rec.best.key == LORA and rec.best.lr == 1e-4
    assert rec.best.val.est == pytest.approx(101 / N)
    by = {c.key: c for c in rec.others}
    assert by[FULL_KEY].indistinguishable and by[FULL_KEY].vs_best.diff == pytest.approx(-1 / N)
    assert not by[MethodKey("base")].indistinguishable
    ps = [by[FULL_KEY].vs_best.p, by[MethodKey("base")].vs_best.p]
    assert [by[FULL_KEY].vs_best.p_adj, by[MethodKey("base")].vs_best.p_adj] == pytest.approx(
        hand_holm(ps)
    )
    md = render_report(exact, [], [])["md"]
    line = next(ln for ln in md.splitlines() if ln.startswith("- **tA**: "))
    assert line.startswith("- **tA**: **LoRA r=8, lr 1e-4**, validation 50.5 % (1 seed), gain ")
    assert "Equivalent: full SFT, lr 1e-5." in line
    assert "Significantly worse: base model (no fine-tuning)." in line


def test_items_are_aligned_by_id_and_only_shared_items_count(exact) -> None:
    """A run missing items, or holding them in another order, is compared on the shared
    items only, matched by id."""
    preds = exact.predictions
    lora = preds[("lora8", "tA", "test")]
    preds[("short", "tA", "test")] = {k: lora[k] for k in sorted(lora, reverse=True)[:150]}
    try:
        c = paired(exact, ["short"], ["base"], ["tA"], "test")
    finally:
        del preds[("short", "tA", "test")]
    keep = sorted(lora)[N - 150 :]
    want = np.mean([lora[k] - preds[("base", "tA", "test")][k] for k in keep])
    assert c is not None and c.n_items == 150 and c.diff == pytest.approx(want)


# ------------------------------------------------------------------ several seeds
@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """3 seeds of LoRA r=8 and full SFT vs one base run: a large in-domain gain, nothing
    elsewhere (equal accuracy, independent item noise)."""
    rng = np.random.default_rng(7)
    n = 300
    latent = {t: rng.random(n) for t in TASKS}
    base = Run("base", "base", test={t: noisy(rng, latent[t], 0.4, 0.0) for t in TASKS})
    runs = [base]
    for s in range(3):
        for rid, method, rank, lr in (("lora", "lora", 8, 1e-4), ("full", "full", None, 1e-5)):
            test = {t: noisy(rng, latent[t], 0.4, 0.05) for t in TASKS}
            test["tA"] = noisy(rng, latent["tA"], 0.75, 0.05)
            alpha = 16.0 if rank else None
            runs.append(Run(f"{rid}-s{s}", method, "tA", rank, alpha, lr, s, test=test))
    path = tmp_path_factory.mktemp("seeded") / "results.sqlite"
    write_store(path, runs, ["tA"], TASKS, "tR")
    return load_report_data(path)


def test_seeded_claims_use_the_t_test_over_seeds_and_items(seeded) -> None:
    claims = _claims(seeded)
    gain = claims[(LORA, BASE, IN)].comparison
    assert gain.test == "seed-t" and (gain.n_seeds_a, gain.n_seeds_b) == (3, 1)
    assert gain.significant and 0 < gain.lo < gain.diff < gain.hi
    for kind in (CROSS, RETENTION):
        null = claims[(LORA, BASE, kind)].comparison
        assert not null.significant and null.lo < 0 < null.hi
    assert not claims[(LORA, FULL, IN)].comparison.significant
    again = summary_claims(seeded)  # cached, and deterministic when recomputed
    seeded.cache.clear()
    assert [c.comparison for c in summary_claims(seeded)] == [c.comparison for c in again]


def test_how_sure_line(seeded) -> None:
    md = render_report(seeded, [], [])["md"]
    line = next(ln for ln in md.splitlines() if ln.startswith("**How sure:**"))
    assert "3 seed(s) per configuration" in line
    assert "items per eval task: tA 300, tX 300, tR 300" in line
    assert "median 95% CI half-width" in line
    assert "mean ± std" not in md
    # the seed spread: the standard deviation over seeds of in-domain and retention scores
    sds = [
        np.std(
            [a.value for a in seeded.scores if a.run_id.startswith(f"{m}-s") and a.task == t],
            ddof=1,
        )
        for m in ("lora", "full")
        for t in ("tA", "tR")
    ]
    want = f"median {100 * np.median(sds):.1f} pp, largest {100 * max(sds):.1f} pp"
    assert f"seed-to-seed standard deviation of the in-domain and retention scores: {want}" in line


def test_single_seed_says_the_tests_miss_seed_noise(exact) -> None:
    md = render_report(exact, [], [])["md"]
    line = next(ln for ln in md.splitlines() if ln.startswith("**How sure:**"))
    assert "1 seed(s) per configuration" in line and "not seed noise" in line


def test_no_predictions_means_no_claims(tmp_path: Path) -> None:
    data = load_report_data(_store_without_predictions(tmp_path))
    assert summary_claims(data) == [] and recommendations(data) == []
    md = render_report(data, [], [])["md"]
    assert "Which differences are real" not in md and "## Summary" in md


def _store_without_predictions(tmp_path: Path) -> Path:
    from rankscope.store import Store

    path = tmp_path / "results.sqlite"
    store = Store(path)
    store.set_meta({"eval_tasks": '["t"]', "train_tasks": '["t"]'})
    for rid, method in (("b", "base"), ("f", "full")):
        store.upsert_run(
            run_id=rid,
            model="toy",
            method=method,
            train_task=None if method == "base" else "t",
            seed=0,
            config_hash="h",
            status="done",
        )
        store.save_eval(rid, "t", {"acc": (0.5, 0.05, 100)}, [])
    store.close()
    return path


# ------------------------------------------------------------------ the batched bootstrap
def test_batched_bootstrap_agrees_with_stats_compare() -> None:
    """Same estimator as `stats.compare`, computed with shared item draws: the same diff,
    intervals and p within Monte Carlo error, the same McNemar p for one seed each."""
    from rankscope.report.significance import PairedTests
    from rankscope.stats import compare

    rng = np.random.default_rng(3)
    latent = rng.random(400)
    a = np.array([noisy(rng, latent, 0.55, 0.1) for _ in range(3)], dtype=float)
    b = np.array([noisy(rng, latent, 0.5, 0.1) for _ in range(2)], dtype=float)
    boot = PairedTests(n_boot=4000)
    mine, ref = boot.compare(a, b, seed=1), compare(a, b, n_boot=4000, seed=1)
    assert mine == ref and mine.test == "seed-t"  # several seeds: the same closed form
    assert (mine.n_items, mine.n_seeds_a, mine.n_seeds_b) == (400, 3, 2)
    mine, ref = boot.compare(a[:1], b[:1], seed=1), compare(a[0], b[0], n_boot=4000, seed=1)
    assert mine.diff == pytest.approx(ref.diff) and mine.test == ref.test == "mcnemar"
    assert mine.lo == pytest.approx(ref.lo, abs=0.006) and mine.hi == pytest.approx(
        ref.hi, abs=0.006
    )
    assert mine.p == ref.p
    one = boot.compare(a[:1], b[:1], seed=2)
    assert one.test == "mcnemar" and one.p == pytest.approx(compare(a[:1], b[:1]).p)
    assert boot.compare(a[:1], b[:1], seed=1) == mine  # deterministic for a seed


def test_p_below_the_bootstrap_resolution_comes_from_the_normal_tail() -> None:
    """With ~100 comparisons Holm needs p far below 1/(n_boot+1); a clear difference of one
    run against one on graded scores gets it from the normal tail of the replicates instead
    of the floor: its z is the paired difference over its item standard error."""
    from rankscope.report.significance import PairedTests

    rng = np.random.default_rng(4)
    latent = rng.random(600)
    a = np.clip(latent + 0.3 + rng.normal(0, 0.2, 600), 0, 1)[None, :]
    b = np.clip(latent + rng.normal(0, 0.2, 600), 0, 1)[None, :]
    c = PairedTests(n_boot=2000).compare(a, b, seed=0)
    d = (a - b)[0]
    z_ref = abs(d.mean()) / (d.std(ddof=0) / np.sqrt(d.size))  # the paired item SE
    assert c.test == "bootstrap" and c.lo > 0 and 0 < c.p < 1e-6 < 1 / 2001
    assert st.norm.isf(c.p / 2) == pytest.approx(z_ref, rel=0.05)


def test_several_seeds_are_compared_by_the_seed_t_test() -> None:
    from rankscope.report.significance import PairedTests
    from rankscope.stats import seed_t

    rng = np.random.default_rng(4)
    latent = rng.random(600)
    a = np.array([noisy(rng, latent, 0.7, 0.05) for _ in range(3)], dtype=float)
    b = np.array([noisy(rng, latent, 0.4, 0.05) for _ in range(3)], dtype=float)
    c = PairedTests(n_boot=2000).compare(a, b, seed=0)
    diff, lo, hi, p, _ = seed_t(a, b)
    assert (c.test, c.diff, c.lo, c.hi, c.p) == ("seed-t", diff, lo, hi, p)
    assert c.lo > 0 and c.p < 0.01
