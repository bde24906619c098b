"""Tests for rankscope.analysis.spectral against float64 numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rankscope.analysis.rank_fits import fit_norm_vs_rank
from rankscope.analysis.spectral import (
    best_match_cosine,
    compare_weights,
    intruder_count,
    intruder_counts,
    lora_delta_singular_values,
    lora_delta_svd,
    matched_cosine,
    max_principal_angle,
    norm_metrics,
    singular_values,
    subspace_k,
    subspace_overlap,
    subspace_similarity,
    top_k_svd,
)

RTOL = 1e-5
FAST = settings(max_examples=25, deadline=None)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _orth(rng: np.random.Generator, n: int, k: int | None = None) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((n, n if k is None else k)))
    return q


def _with_spectrum(rng: np.random.Generator, s: np.ndarray, m: int, n: int) -> np.ndarray:
    """m×n matrix with singular values s (len ≤ min(m, n)) and random singular vectors."""
    return (_orth(rng, m, s.size) * s) @ _orth(rng, n, s.size).T


def _decaying(rng: np.random.Generator, m: int, n: int) -> np.ndarray:
    """Pretrained-like: power-law signal plus a Gaussian noise bulk."""
    s = 10.0 * (1.0 + np.arange(min(m, n))) ** -1.0
    return _with_spectrum(rng, s, m, n) + 0.01 * rng.standard_normal((m, n))


def _close(a: float, b: float, rtol: float = RTOL) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-300)


# ------------------------------------------------------------ singular values


def test_singular_values_matches_numpy_and_is_descending() -> None:
    m = _rng().standard_normal((37, 23))
    s = singular_values(m)
    np.testing.assert_allclose(s, np.linalg.svd(m, compute_uv=False), rtol=1e-12)
    assert s.dtype == np.float64
    assert np.all(np.diff(s) <= 0)


def test_singular_values_accepts_torch_low_precision() -> None:
    t = torch.randn(20, 30, dtype=torch.float32)
    ref = np.linalg.svd(t.double().numpy(), compute_uv=False)
    np.testing.assert_allclose(singular_values(t), ref, rtol=1e-12)
    bf = t.to(torch.bfloat16)
    s_bf = singular_values(bf)
    assert s_bf.dtype == np.float64
    np.testing.assert_allclose(s_bf, np.linalg.svd(bf.double().numpy(), compute_uv=False))


# ----------------------------------------------------------------------- LoRA


@FAST
@given(
    seed=st.integers(0, 2**31 - 1),
    d_out=st.integers(1, 60),
    d_in=st.integers(1, 60),
    r=st.integers(1, 16),
    scale=st.floats(-4.0, 4.0).filter(lambda x: abs(x) > 1e-3),
)
def test_lora_spectrum_equals_dense(seed: int, d_out: int, d_in: int, r: int, scale: float) -> None:
    rng = _rng(seed)
    B, A = rng.standard_normal((d_out, r)), rng.standard_normal((r, d_in))
    dense = np.linalg.svd(scale * B @ A, compute_uv=False)
    fact = lora_delta_singular_values(B, A, scale)
    n = min(r, d_out, d_in)
    assert fact.shape == (n,)
    np.testing.assert_allclose(fact, dense[:n], rtol=RTOL, atol=RTOL * dense[0])
    np.testing.assert_allclose(dense[n:], 0.0, atol=1e-10 * dense[0])


def test_rank_r_update_has_exactly_r_nonzero_singular_values() -> None:
    rng = _rng(1)
    d_out, d_in, r = 96, 80, 7
    B, A = rng.standard_normal((d_out, r)), rng.standard_normal((r, d_in))
    w0 = rng.standard_normal((d_out, d_in))
    w1 = w0 + 0.5 * B @ A
    dense = singular_values(w1 - w0)
    assert int(np.sum(dense > 1e-10 * dense[0])) == r
    fact = lora_delta_singular_values(B, A, 0.5)
    assert fact.shape == (r,) and np.all(fact > 1e-6)
    np.testing.assert_allclose(fact, dense[:r], rtol=RTOL)


def test_lora_spectrum_accepts_torch_factors() -> None:
    B, A = torch.randn(50, 4), torch.randn(4, 40)
    dense = np.linalg.svd(2.0 * (B.double() @ A.double()).numpy(), compute_uv=False)
    np.testing.assert_allclose(lora_delta_singular_values(B, A, 2.0), dense[:4], rtol=RTOL)


def test_lora_spectrum_rejects_mismatched_factors() -> None:
    with pytest.raises(ValueError):
        lora_delta_singular_values(np.ones((5, 3)), np.ones((2, 5)), 1.0)


@pytest.mark.parametrize("scale", [1.0, -0.75, 2.5])
def test_lora_delta_svd_reconstructs_delta(scale: float) -> None:
    rng = _rng(2)
    B, A = rng.standard_normal((70, 6)), rng.standard_normal((6, 45))
    u, s, vh = lora_delta_svd(B, A, scale)
    assert u.shape == (70, 6) and s.shape == (6,) and vh.shape == (6, 45)
    np.testing.assert_allclose((u * s) @ vh, scale * B @ A, atol=1e-10)
    np.testing.assert_allclose(u.T @ u, np.eye(6), atol=1e-12)
    np.testing.assert_allclose(vh @ vh.T, np.eye(6), atol=1e-12)
    assert np.all(np.diff(s) <= 0) and np.all(s >= 0)


# ---------------------------------------------------------------- norm metrics


def _reference_norm_metrics(delta: np.ndarray, w0: np.ndarray) -> dict[str, float]:
    """Straight-from-the-definition reference, from the dense matrix."""
    s = np.linalg.svd(delta, compute_uv=False)
    fro, spec = np.linalg.norm(delta, "fro"), np.linalg.norm(delta, 2)
    p = s[s > 0] / s.sum()
    energy = np.cumsum(s**2) / np.sum(s**2)
    return {
        "fro": fro,
        "spectral": spec,
        "rel_fro": fro / np.linalg.norm(w0, "fro"),
        "stable_rank": fro**2 / spec**2,
        "effective_rank": math.exp(-sum(pi * math.log(pi) for pi in p)),
        "rank90": next(i + 1 for i, e in enumerate(energy) if e >= 0.9 - 1e-12),
    }


@pytest.mark.parametrize("seed", range(4))
def test_norm_metrics_match_reference(seed: int) -> None:
    rng = _rng(seed)
    w0 = rng.standard_normal((48, 64))
    delta = _decaying(rng, 48, 64) * rng.uniform(0.01, 3.0)
    got = norm_metrics(singular_values(delta), float(np.linalg.norm(w0)))
    for key, ref in _reference_norm_metrics(delta, w0).items():
        assert _close(got[key], ref), (key, got[key], ref)


@pytest.mark.parametrize("n", [1, 5, 64])
def test_identity_spectrum_ranks_equal_dimension(n: int) -> None:
    m = norm_metrics(np.full(n, 3.0), 1.0)
    assert _close(m["stable_rank"], n) and _close(m["effective_rank"], n)
    assert m["rank90"] == math.ceil(0.9 * n)
    assert _close(m["fro"], 3.0 * math.sqrt(n)) and m["spectral"] == 3.0


@pytest.mark.parametrize(
    ("sv", "expected"),
    [
        ([3.0, 1.0], 1),  # 9 / 10 = exactly 90 %
        ([1.0, 1.0, 1.0, 1.0], 4),  # 3/4 < 90 %
        ([2.0, 1.0, 1.0], 3),  # 4/6, 5/6 < 90 %
        ([10.0, 1.0, 0.1], 1),
        ([1.0, 2.0, 0.0, 0.0], 2),  # unsorted, zeros: 4/5 < 90 %
        ([5.0], 1),
    ],
)
def test_rank90_known_cases(sv: list[float], expected: int) -> None:
    assert norm_metrics(np.array(sv), 1.0)["rank90"] == expected


def test_norm_metrics_zero_update() -> None:
    m = norm_metrics(np.zeros(8), 2.0)
    assert m["fro"] == 0 and m["spectral"] == 0 and m["rel_fro"] == 0
    assert m["stable_rank"] == 0 and m["effective_rank"] == 0 and m["rank90"] == 0
    assert math.isnan(norm_metrics(np.ones(3), 0.0)["rel_fro"])


@FAST
@given(
    sv=st.lists(st.floats(0.0, 1e3), min_size=1, max_size=40).filter(lambda v: max(v) > 1e-3),
    c=st.floats(1e-3, 1e3),
)
def test_ranks_are_scale_invariant_and_bounded(sv: list[float], c: float) -> None:
    s = np.array(sv)
    a, b = norm_metrics(s, 1.0), norm_metrics(c * s, 1.0)
    for key in ("stable_rank", "effective_rank"):
        assert _close(a[key], b[key], 1e-9)
        assert 1.0 - 1e-9 <= a[key] <= np.count_nonzero(s) + 1e-9
    assert 1 <= a["rank90"] <= np.count_nonzero(s)
    assert _close(b["fro"], c * a["fro"], 1e-9)


# ------------------------------------------------------------------- top-k SVD


@pytest.mark.parametrize("method", ["full", "randomized", "krylov", "auto"])
def test_top_k_svd_is_exact_on_low_rank(method: str) -> None:
    rng = _rng(3)
    s = np.geomspace(10.0, 1.0, 20)
    m = _with_spectrum(rng, s, 400, 300)
    u, sk, vh = top_k_svd(m, 10, method=method)
    assert u.shape == (400, 10) and sk.shape == (10,) and vh.shape == (10, 300)
    np.testing.assert_allclose(sk, s[:10], rtol=1e-10)
    ref_u, _, ref_vh = np.linalg.svd(m, full_matrices=False)
    np.testing.assert_allclose(np.abs(np.sum(u * ref_u[:, :10], axis=0)), 1.0, atol=1e-8)
    np.testing.assert_allclose(np.abs(np.sum(vh * ref_vh[:10], axis=1)), 1.0, atol=1e-8)


def test_top_k_svd_krylov_accurate_on_noisy_decaying_spectrum() -> None:
    """σ_k inside the flat noise bulk: the case default settings must handle."""
    m = _decaying(_rng(4), 512, 400)
    ref = np.linalg.svd(m, compute_uv=False)
    u, s, vh = top_k_svd(m, 32, method="krylov")
    np.testing.assert_allclose(s, ref[:32], rtol=RTOL)
    np.testing.assert_allclose(u.T @ u, np.eye(32), atol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(m.T @ u - vh.T * s, axis=0) / s, 0, atol=1e-2)


def test_top_k_svd_caps_k_and_is_deterministic() -> None:
    m = _rng(5).standard_normal((30, 12))
    u, s, vh = top_k_svd(m, 50)
    assert u.shape == (30, 12) and s.shape == (12,) and vh.shape == (12, 12)
    big = _decaying(_rng(6), 300, 300)
    a = top_k_svd(big, 20, method="randomized", seed=3)
    b = top_k_svd(big, 20, method="randomized", seed=3)
    np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(ValueError):
        top_k_svd(big, 3, method="nope")


# ------------------------------------------------------------ subspace metrics


def _loop_refs(v0: np.ndarray, v1: np.ndarray) -> tuple[float, np.ndarray, float]:
    k = min(v0.shape[1], v1.shape[1])
    matched = np.mean([abs(float(v1[:, i] @ v0[:, i])) for i in range(k)])
    best = np.array(
        [
            max(abs(float(v1[:, j] @ v0[:, i])) for i in range(v0.shape[1]))
            for j in range(v1.shape[1])
        ]
    )
    overlap = sum(
        float(v0[:, i] @ v1[:, j]) ** 2 for i in range(v0.shape[1]) for j in range(v1.shape[1])
    )
    return float(matched), best, overlap / k


@pytest.mark.parametrize(("k0", "k1"), [(8, 8), (12, 5), (3, 9)])
def test_similarity_metrics_match_loop_reference(k0: int, k1: int) -> None:
    rng = _rng(7)
    v0, v1 = _orth(rng, 40, k0), _orth(rng, 40, k1)
    v1[:, 0] = v0[:, 0]  # one shared direction
    matched, best, overlap = _loop_refs(v0, v1)
    assert _close(matched_cosine(v0, v1), matched)
    np.testing.assert_allclose(best_match_cosine(v0, v1), best, rtol=RTOL)
    assert _close(subspace_overlap(v0, v1), overlap)


@FAST
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 40), k=st.integers(1, 12))
def test_similarities_in_unit_interval_and_self_overlap_one(seed: int, n: int, k: int) -> None:
    rng = _rng(seed)
    k = min(k, n)
    v0, v1 = _orth(rng, n, k), _orth(rng, n, k)
    for value in (matched_cosine(v0, v1), subspace_overlap(v0, v1)):
        assert 0.0 <= value <= 1.0
    best = best_match_cosine(v0, v1)
    assert np.all((best >= 0.0) & (best <= 1.0))
    # any basis of the same span: overlap 1, whatever the rotation or signs
    rotated = v0 @ _orth(rng, k) * rng.choice([-1.0, 1.0], size=k)
    assert _close(subspace_overlap(v0, rotated), 1.0, 1e-9)
    assert _close(matched_cosine(v0, -v0), 1.0, 1e-12)


@FAST
@given(
    seed=st.integers(0, 2**31 - 1),
    eps=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6),
    k=st.integers(0, 20),
)
def test_intruder_count_monotone_in_eps(seed: int, eps: list[float], k: int) -> None:
    rng = _rng(seed)
    u0, u1 = _orth(rng, 30, 15), _orth(rng, 30, 20)
    counts = intruder_counts(u0, u1, k, sorted(eps))
    values = [counts[float(e)] for e in sorted(eps)]
    assert values == sorted(values)
    assert all(0 <= c <= min(k, 20) for c in values)
    for e in eps:
        assert intruder_count(u0, u1, k, e) == counts[float(e)]


@pytest.mark.parametrize(("i", "j"), [(6, 6), (4, 9), (10, 3)])
def test_subspace_similarity_is_hu_et_al_phi(i: int, j: int) -> None:
    """φ(A, B, i, j) = ‖U_A[:, :i]ᵀ U_B[:, :j]‖²_F / min(i, j), i.e. the mean squared cosine of
    the min(i, j) principal angles between the two spans (scipy as the reference)."""
    rng = _rng(21)
    u_a = np.linalg.svd(rng.standard_normal((50, 30)))[0]
    u_b = np.linalg.svd(
        u_a[:, :30] @ rng.standard_normal((30, 30)) + rng.standard_normal((50, 30))
    )[0]
    a, b = u_a[:, :i], u_b[:, :j]
    loop = sum(float(a[:, p] @ b[:, q]) ** 2 for p in range(i) for q in range(j)) / min(i, j)
    angles = scipy.linalg.subspace_angles(a, b)
    assert angles.size == min(i, j)
    assert _close(subspace_similarity(u_a, u_b, i, j), loop, 1e-9)
    assert _close(subspace_similarity(u_a, u_b, i, j), float(np.mean(np.cos(angles) ** 2)), 1e-9)
    assert _close(max_principal_angle(a, b), float(np.degrees(angles.max())), 1e-9)


@pytest.mark.parametrize(
    ("k", "shape", "want"),
    [
        (500, (64, 64), 16),
        (500, (128, 64), 16),
        (500, (4096, 4096), 500),
        (8, (64, 64), 8),
        (500, (3, 3), 1),
    ],
)
def test_subspace_k_is_a_quarter_of_the_smaller_dimension(
    k: int, shape: tuple[int, int], want: int
) -> None:
    assert subspace_k(k, shape) == want


def test_subspace_similarity_is_not_trivially_one_on_a_toy_weight(small_model_dir) -> None:
    """A real square weight of the shipped toy model (64 x 64): the paper's k = 500 caps at 64,
    where the top-k span is the whole space and the old ‖U0ᵀU1‖²_F/k overlap is 1 whatever
    W₁ is. At subspace_k = 16 the measure sees the update rotate the dominant subspace."""
    from safetensors.numpy import load_file

    w0 = load_file(str(small_model_dir / "model.safetensors"))[
        "model.layers.0.self_attn.q_proj.weight"
    ].astype(np.float64)
    rng = _rng(22)
    b, a = rng.standard_normal((64, 4)), rng.standard_normal((4, 64))
    w1 = w0 + 0.5 * np.linalg.norm(w0) / np.linalg.norm(b @ a) * b @ a
    m = compare_weights(w0, w1, k=500)
    u0, _, vh0 = np.linalg.svd(w0)
    u1, _, vh1 = np.linalg.svd(w1)
    assert m["sim_k"] == 64 and m["subspace_k"] == 16
    assert _close(subspace_overlap(u0, u1), 1.0, 1e-9)  # all 64 vectors: trivially 1
    want_l = np.sum((u0[:, :16].T @ u1[:, :16]) ** 2) / 16
    want_r = np.sum((vh0[:16] @ vh1[:16].T) ** 2) / 16
    assert _close(m["subspace_sim_left"], want_l, 1e-9)
    assert _close(m["subspace_sim_right"], want_r, 1e-9)
    assert m["subspace_sim_left"] < 0.95 and m["subspace_sim_right"] < 0.95
    angles = scipy.linalg.subspace_angles(u0[:, :16], u1[:, :16])
    assert _close(m["max_angle_left"], float(np.degrees(angles.max())), 1e-9)
    assert m["max_angle_left"] > 20.0


def test_swapped_near_tied_vectors_keep_the_subspace_similarity() -> None:
    """Singular values in near-tied pairs, nudged so that every pair swaps order: the
    index-matched cosine collapses (each u_i now meets its orthogonal twin) although W₁ is
    W₀ up to a 1e-3 change; the top-k span, and so φ and the principal angles, is unchanged."""
    rng = _rng(23)
    d = 64
    u, v = _orth(rng, d), _orth(rng, d)
    s0 = np.repeat(np.geomspace(10.0, 0.1, d // 2), 2) + np.tile([1e-3, 0.0], d // 2)
    s1 = s0 + np.tile([-2e-3, 2e-3], d // 2)  # each pair swaps its two values
    w0, w1 = (u * s0) @ v.T, (u * s1) @ v.T
    m = compare_weights(w0, w1, k=500)
    assert m["subspace_k"] == 16  # an even k: no pair is split by the cut
    assert m["sim_left"] < 1e-6 and m["sim_right"] < 1e-6
    assert _close(m["subspace_sim_left"], 1.0, 1e-9)
    assert _close(m["subspace_sim_right"], 1.0, 1e-9)
    assert m["max_angle_left"] < 1e-4


# --------------------------------------------------------- intruder dimensions


def _planted(sigma: float, seed: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """W1 = W0 + σ u vᵀ with u, v spread evenly over W0's *bottom* half of directions."""
    rng = _rng(seed)
    d = 64
    u0, v0 = _orth(rng, d), _orth(rng, d)
    w0 = (u0 * (10.0 * 0.8 ** np.arange(d))) @ v0.T
    u = u0[:, d // 2 :].sum(axis=1) / math.sqrt(d // 2)
    v = v0[:, d // 2 :].sum(axis=1) / math.sqrt(d // 2)
    return w0, w0 + sigma * np.outer(u, v)


def test_planted_orthogonal_direction_is_exactly_one_intruder() -> None:
    w0, w1 = _planted(sigma=50.0)
    u0 = np.linalg.svd(w0)[0]
    u1 = np.linalg.svd(w1)[0]
    assert intruder_count(u0, u1, k=10, eps=0.5) == 1
    best = best_match_cosine(u0, u1[:, :10])
    assert best[0] < 0.2 and np.all(best[1:] > 0.999)  # 1/sqrt(32) ≈ 0.18
    assert intruder_counts(u0, u1, 10, [0.1, 0.5, 0.9]) == {0.1: 0, 0.5: 1, 0.9: 1}
    m = compare_weights(w0, w1, k=20, eps=(0.1, 0.5))
    assert m["intruders_0.5"] == 1 and m["intruders_0.1"] == 0
    assert _close(m["spectral"], 50.0) and m["rank90"] == 1


def test_planted_direction_outside_column_space_of_tall_w0() -> None:
    rng = _rng(9)
    w0 = _with_spectrum(rng, np.geomspace(5.0, 0.5, 20), 100, 20)
    q = np.linalg.qr(np.column_stack([np.linalg.svd(w0)[0][:, :20], rng.standard_normal(100)]))[0]
    u = q[:, 20]  # orthogonal to range(W0)
    w1 = w0 + 30.0 * np.outer(u, _orth(rng, 20, 1)[:, 0])
    m = compare_weights(w0, w1, k=20, intruder_k=10, eps=(0.5,))
    assert m["intruders_0.5"] == 1


def test_identical_weights_give_similarity_one_and_no_intruders() -> None:
    w = _decaying(_rng(10), 80, 60)
    m = compare_weights(w, w.copy(), k=500, eps=(0.3, 0.5, 0.9))
    for key in ("sim_left", "sim_right", "best_match_left"):
        assert _close(m[key], 1.0, 1e-9), key
    for key in ("subspace_sim_left", "subspace_sim_right"):
        assert _close(m[key], 1.0, 1e-9), key
    assert m["max_angle_left"] < 1e-5
    assert m["intruders_0.3"] == m["intruders_0.5"] == m["intruders_0.9"] == 0
    assert m["fro"] == 0 and m["rank90"] == 0


# ------------------------------------------------------------ compare_weights


def test_compare_weights_matches_reference() -> None:
    rng = _rng(11)
    w0 = _decaying(rng, 90, 70)
    w1 = w0 + 0.05 * rng.standard_normal((90, 70))
    k = 15
    m = compare_weights(w0, w1, k=k, intruder_k=8, eps=(0.5, 0.25))
    u0, _, vh0 = np.linalg.svd(w0)
    u1, _, vh1 = np.linalg.svd(w1)
    ref = _reference_norm_metrics(w1 - w0, w0)
    matched_l, best_l, _ = _loop_refs(u0[:, :k], u1[:, :k])
    ks = min(k, 70 // 4)  # subspace_k: min(k, min(d_out, d_in) // 4)
    ref |= {
        "sim_k": k,
        "sim_left": matched_l,
        "sim_right": _loop_refs(vh0[:k].T, vh1[:k].T)[0],
        "best_match_left": float(np.mean(best_l)),
        "subspace_k": ks,
        "subspace_sim_left": _loop_refs(u0[:, :ks], u1[:, :ks])[2],
        "subspace_sim_right": _loop_refs(vh0[:ks].T, vh1[:ks].T)[2],
        "max_angle_left": np.degrees(scipy.linalg.subspace_angles(u0[:, :ks], u1[:, :ks])).max(),
    }
    for key, value in ref.items():
        assert _close(float(m[key]), float(value)), (key, m[key], value)
    best_all = np.abs(u0.T @ u1[:, :8]).max(axis=0)
    assert m["intruders_0.5"] == int(np.sum(best_all < 0.5))
    assert m["intruders_0.25"] == int(np.sum(best_all < 0.25))


def test_compare_weights_cached_w0_svd_and_factored_delta() -> None:
    rng = _rng(12)
    w0 = _decaying(rng, 64, 48)
    B, A = rng.standard_normal((64, 4)), rng.standard_normal((4, 48))
    w1 = w0 + 0.1 * B @ A
    plain = compare_weights(w0, w1, k=16)
    cached = compare_weights(
        torch.from_numpy(w0),
        torch.from_numpy(w1),
        k=16,
        w0_svd=tuple(torch.from_numpy(x) for x in np.linalg.svd(w0, full_matrices=False)),
        delta_sv=lora_delta_singular_values(B, A, 0.1),
    )
    assert plain.keys() == cached.keys()
    for key in plain:
        assert _close(float(plain[key]), float(cached[key])), key


def test_compare_weights_caps_k_and_rejects_shape_mismatch() -> None:
    rng = _rng(13)
    w0 = rng.standard_normal((12, 9))
    w1 = w0 + 0.3 * rng.standard_normal((12, 9))  # moved enough for the cosines to differ
    m = compare_weights(w0, w1, k=500, intruder_k=50, eps=(0.5, 0.8))
    assert m["sim_k"] == 9  # k = 500 capped at min(12, 9)
    # the reference, by plain numpy SVD at k = 9: mean |cos| of same-index singular vectors
    u0, _, vh0 = np.linalg.svd(w0, full_matrices=False)
    u1, _, vh1 = np.linalg.svd(w1, full_matrices=False)
    cos_left = np.abs(np.sum(u0[:, :9] * u1[:, :9], axis=0))
    cos_right = np.abs(np.sum(vh0[:9] * vh1[:9], axis=1))
    assert cos_left.min() < 0.99 and cos_left[:8].mean() != pytest.approx(cos_left.mean())
    assert m["sim_left"] == pytest.approx(cos_left.mean(), abs=1e-9)
    assert m["sim_right"] == pytest.approx(cos_right.mean(), abs=1e-9)
    # intruders: W₁'s top 9 (50 capped) left vectors with best |cos| < 0.5 against all of U₀
    best = np.abs(u0.T @ u1).max(axis=0)
    assert m["intruders_0.5"] == int(np.sum(best < 0.5)) == 0
    assert m["intruders_0.8"] == int(np.sum(best < 0.8)) == 3  # best |cos| 0.57, 0.70, 0.76
    with pytest.raises(ValueError):
        compare_weights(w0, w0.T)


# ------------------------------------------------------------------ rank fits


def test_fit_recovers_planted_log_and_power_laws() -> None:
    r = np.array([1, 2, 4, 8, 16, 64, 256], dtype=float)
    log_fit = fit_norm_vs_rank(r, 0.3 + 1.7 * np.log(r))
    assert _close(log_fit["log_a"], 0.3) and _close(log_fit["log_b"], 1.7)
    assert _close(log_fit["log_r2"], 1.0, 1e-12)
    pow_fit = fit_norm_vs_rank(r.tolist(), (2.5 * r**0.42).tolist())
    assert _close(pow_fit["pow_c"], 2.5) and _close(pow_fit["pow_p"], 0.42)
    assert _close(pow_fit["pow_r2"], 1.0, 1e-12)
    assert log_fit["pow_r2"] < 1.0 and pow_fit["log_r2"] < 1.0


def test_fit_with_too_few_ranks_is_nan() -> None:
    for ranks, norms in [([8], [1.0]), ([8, 8, 8], [1.0, 1.1, 0.9]), ([], [])]:
        out = fit_norm_vs_rank(ranks, norms)
        assert set(out) == {"log_a", "log_b", "log_r2", "pow_c", "pow_p", "pow_r2"}
        assert all(math.isnan(v) for v in out.values())
    # non-positive norms only disable the power fit
    out = fit_norm_vs_rank([1, 2, 4], [0.0, 0.0, 1.0])
    assert not math.isnan(out["log_b"]) and math.isnan(out["pow_p"])


@FAST
@given(
    a=st.floats(-5, 5),
    b=st.floats(-5, 5),
    ranks=st.lists(st.integers(1, 1024), min_size=2, max_size=8, unique=True),
)
def test_fit_log_property(a: float, b: float, ranks: list[int]) -> None:
    r = np.array(ranks, dtype=float)
    out = fit_norm_vs_rank(r, a + b * np.log(r))
    assert abs(out["log_a"] - a) < 1e-8 and abs(out["log_b"] - b) < 1e-8
