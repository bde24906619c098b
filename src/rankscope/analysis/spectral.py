"""Spectral analysis of fine-tuning weight updates.

Pure functions (no I/O, no model code) behind the "how far did fine-tuning move the
weights, and in which directions" part of the report:

* norms and effective dimensionality of the update ΔW = W₁ − W₀ ("How Much is Too
  Much? Exploring LoRA Rank Trade-offs": the size of the update grows with LoRA rank);
* similarity of the singular subspaces of W₀ and W₁ and *intruder dimensions*
  (Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: An Illusion of Equivalence"):
  top singular vectors of W₁ that are nearly orthogonal to every singular vector of W₀.

Two kinds of singular-vector similarity are reported, because they answer different
questions. The index-matched cosine (``sim_*``, the paper's top-k measure) pairs the i-th
vectors of W₀ and W₁; deep in the near-degenerate bulk of a pretrained spectrum nearly tied
vectors swap places or rotate into each other, so it drops there without any real change.
The subspace measures (``subspace_sim_*``: the normalised subspace similarity of Hu et al.
2021, §7; ``max_angle_left``: the largest principal angle) compare the *spans* of the top-k
vectors and are blind to such swaps; they use a smaller k (:func:`subspace_k`), because the
span of all min(d_out, d_in) vectors is the whole space and the overlap would be 1 whatever
fine-tuning did.

Everything is computed in float64 numpy. Inputs may be numpy arrays or torch tensors of
any float dtype (bf16 included); they are converted to float64 on the CPU first, because
bf16 has ~3 significant digits and would swamp the small quantities measured here.

Conventions: singular vectors are *columns* (``U[:, i]``, ``Vh[i].T``); singular values
are returned in descending order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import scipy.linalg

SvdTriple = tuple[np.ndarray, np.ndarray, np.ndarray]

# ``top_k_svd(method="auto")`` uses a full SVD at or below this smallest dimension.
SMALL_DIM = 256


def _as_f64(x: Any) -> np.ndarray:
    """Convert a numpy array / torch tensor / sequence to a float64 numpy array."""
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def singular_values(m: Any) -> np.ndarray:
    """All singular values of ``m`` in float64, descending (values only: cheaper)."""
    return np.linalg.svd(_as_f64(m), compute_uv=False)


# --------------------------------------------------------------------------- LoRA


def _lora_core(B: Any, A: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """QR-reduce ΔW ∝ B·A to (Q_B, R_B·R_Aᵀ, Q_A) so only an r×r matrix needs an SVD."""
    b, a = _as_f64(B), _as_f64(A)
    if b.ndim != 2 or a.ndim != 2 or b.shape[1] != a.shape[0]:
        raise ValueError(f"need B (d_out x r) and A (r x d_in), got {b.shape} and {a.shape}")
    q_b, r_b = np.linalg.qr(b)
    q_a, r_a = np.linalg.qr(a.T)
    return q_b, r_b @ r_a.T, q_a


def lora_delta_singular_values(B: Any, A: Any, scale: float = 1.0) -> np.ndarray:
    """Singular values of ΔW = scale·B·A without forming ΔW.

    B·A = Q_B (R_B R_Aᵀ) Q_Aᵀ with orthonormal Q's, so its spectrum is that of the
    small r×r core: O((d_out + d_in)·r²) instead of a dense O(d³) SVD. Returns the
    min(r, d_out, d_in) values (the remaining ones of the dense spectrum are zero).
    """
    _, core, _ = _lora_core(B, A)
    return abs(float(scale)) * np.linalg.svd(core, compute_uv=False)


def lora_delta_svd(B: Any, A: Any, scale: float = 1.0) -> SvdTriple:
    """Thin SVD (U, S, Vh) of ΔW = scale·B·A with r components, at LoRA cost."""
    q_b, core, q_a = _lora_core(B, A)
    u, s, vh = np.linalg.svd(core, full_matrices=False)
    sign = -1.0 if scale < 0 else 1.0
    return sign * (q_b @ u), abs(float(scale)) * s, vh @ q_a.T


# ------------------------------------------------------------------ norm metrics


def _rank90(energy: np.ndarray, total: float) -> int:
    """Smallest k whose top-k energy reaches 90 % (relative slack 1e-12 for rounding)."""
    k = int(np.searchsorted(np.cumsum(energy), 0.9 * total * (1.0 - 1e-12), side="left"))
    return min(k + 1, energy.size)


def norm_metrics(delta_sv: Any, w0_fro: float) -> dict[str, float]:
    """Size and effective dimensionality of ΔW from its singular values alone.

    Working from the spectrum lets LoRA callers use the factored spectrum
    (:func:`lora_delta_singular_values`) and never form a dense ΔW.
    Keys: fro, spectral, rel_fro (fro/‖W₀‖_F; NaN if W₀ = 0), stable_rank
    (fro²/σ_max²), effective_rank (Roy & Vetterli: exp of the entropy of σ/Σσ),
    rank90 (smallest k holding 90 % of Σσ²). All ranks are 0 for ΔW = 0.
    """
    s = np.sort(np.abs(_as_f64(delta_sv).ravel()))[::-1]
    energy = s**2
    total = float(energy.sum())
    fro = float(np.sqrt(total))
    spectral = float(s[0]) if s.size else 0.0
    out: dict[str, float] = {
        "fro": fro,
        "spectral": spectral,
        "rel_fro": fro / w0_fro if w0_fro > 0 else float("nan"),
        "stable_rank": 0.0,
        "effective_rank": 0.0,
        "rank90": 0,
    }
    if total > 0:
        p = s / s.sum()
        p = p[p > 0]  # after dividing: tiny σ can underflow to 0 here
        out["stable_rank"] = total / spectral**2
        out["effective_rank"] = float(np.exp(-np.sum(p * np.log(p))))
        out["rank90"] = _rank90(energy, total)
    return out


# ------------------------------------------------------------------- top-k SVD


def _power_blocks(a: np.ndarray, width: int, n_iter: int, seed: int) -> list[np.ndarray]:
    """Orthonormal bases of A·Ω, (AAᵀ)A·Ω, …: Gaussian sketch + QR-stabilised power steps."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(a @ rng.standard_normal((a.shape[1], width)))
    blocks = [q]
    for _ in range(n_iter):
        z, _ = np.linalg.qr(a.T @ q)
        q, _ = np.linalg.qr(a @ z)
        blocks.append(q)
    return blocks


def _rayleigh_ritz(a: np.ndarray, q: np.ndarray, k: int) -> SvdTriple:
    """Best rank-k approximation of A within range(Q), from the small B = QᵀA.

    Top-k eigenpairs of the Gram matrix BBᵀ (3-4× cheaper than an SVD of the wide B
    when range(Q) is a large Krylov basis). Squaring costs precision only for σ far
    below σ_max, so fall back to an SVD of B when σ_k < 1e-4·σ_1 (or σ_k = 0).
    """
    b = q.T @ a
    n = b.shape[0]
    w, v = scipy.linalg.eigh(b @ b.T, subset_by_index=(n - k, n - 1))
    s = np.sqrt(np.maximum(w[::-1], 0.0))
    if not s[-1] > 1e-4 * s[0]:
        u, s, vh = np.linalg.svd(b, full_matrices=False)
        return q @ u[:, :k], s[:k], vh[:k]
    v = v[:, ::-1]
    return q @ v, s, (v.T @ b) / s[:, None]


def _full_top_k(a: np.ndarray, k: int) -> SvdTriple:
    u, s, vh = np.linalg.svd(a, full_matrices=False)
    return u[:, :k], s[:k], vh[:k]


def top_k_svd(
    m: Any,
    k: int,
    *,
    oversample: int = 10,
    n_iter: int = 8,
    seed: int = 0,
    method: str = "auto",
) -> SvdTriple:
    """Top-k singular triplets (U: d_out×k, S: k, Vh: k×d_in) of ``m``, float64.

    Methods: "full" (LAPACK SVD); "randomized" (Halko, Martinsson & Tropp 2011:
    Gaussian sketch of width k+oversample, ``n_iter`` QR-re-orthonormalised power
    iterations, Rayleigh–Ritz on the last block); "krylov" (same iterations, but
    Rayleigh–Ritz on the span of *all* blocks — block Krylov, Musco & Musco 2015 —
    which converges with the square root of the spectral gap and so stays accurate
    when σ_k sits in the flat noise bulk of a pretrained weight, where plain power
    iteration stalls); "auto": full SVD when min(shape) ≤ 256 or k > min(shape)/4,
    else krylov. k is capped at min(shape); a sketch as wide as the matrix falls
    back to the full SVD, which is then no more expensive.
    Defaults (oversample 10, n_iter 8) give < 1e-4 relative error on the top 64 values
    of a 1024² pretrained-like matrix (benchmarks/spectral.py: ~1e-7); at d = 4096,
    with σ_64 deep inside the noise bulk, use n_iter ≈ 12 for the same accuracy.
    """
    a = _as_f64(m)
    n = min(a.shape)
    k = max(0, min(int(k), n))
    if method == "auto":
        method = "full" if n <= SMALL_DIM or 4 * k > n else "krylov"
    if method not in ("full", "randomized", "krylov"):
        raise ValueError(f"unknown method {method!r}")
    width = k + max(0, int(oversample))
    n_blocks = (n_iter + 1) if method == "krylov" else 1
    if method == "full" or k == 0 or width * n_blocks >= n:
        return _full_top_k(a, k)
    blocks = _power_blocks(a, width, n_iter, seed)
    q = np.linalg.qr(np.hstack(blocks))[0] if method == "krylov" else blocks[-1]
    return _rayleigh_ritz(a, q, k)


# -------------------------------------------------------- subspace similarity


def _abs_cos(v0: np.ndarray, v1: np.ndarray) -> np.ndarray:
    """|V0ᵀV1| clipped to ≤ 1 (unit columns can give 1 + 1e-16 by rounding)."""
    return np.minimum(np.abs(v0.T @ v1), 1.0)


def matched_cosine(V0: Any, V1: Any) -> float:
    """Mean |⟨v1_i, v0_i⟩| over the first k = min(#cols) columns (same-index match).

    Sign-invariant (singular vectors are defined up to sign) but order-sensitive, so
    it also drops when nearly tied singular values swap places.
    """
    v0, v1 = _as_f64(V0), _as_f64(V1)
    k = min(v0.shape[1], v1.shape[1])
    if k == 0:
        return float("nan")
    cos = np.abs(np.einsum("ij,ij->j", v0[:, :k], v1[:, :k]))
    return float(np.mean(np.minimum(cos, 1.0)))


def best_match_cosine(V0: Any, V1: Any) -> np.ndarray:
    """For each column j of V1: max_i |⟨v1_j, v0_i⟩| over all columns i of V0.

    Order-insensitive version of :func:`matched_cosine`; the building block of the
    intruder-dimension test.
    """
    v0, v1 = _as_f64(V0), _as_f64(V1)
    if v0.shape[1] == 0:
        return np.zeros(v1.shape[1])
    return _abs_cos(v0, v1).max(axis=0)


def subspace_overlap(V0: Any, V1: Any) -> float:
    """‖V0ᵀV1‖²_F / k with k = min(#cols): mean squared cosine of the principal angles.

    1 when the spans coincide (whatever the basis), 0 when orthogonal.
    """
    v0, v1 = _as_f64(V0), _as_f64(V1)
    k = min(v0.shape[1], v1.shape[1])
    if k == 0:
        return float("nan")
    return float(min(np.sum((v0.T @ v1) ** 2) / k, 1.0))


def subspace_similarity(U_A: Any, U_B: Any, i: int, j: int) -> float:
    """φ(A, B, i, j) = ‖U_A[:, :i]ᵀ U_B[:, :j]‖²_F / min(i, j) (Hu et al. 2021, §7).

    The normalised subspace similarity of the LoRA paper: how much of the span of A's top-i
    singular vectors lies in the span of B's top-j, from 0 (orthogonal) to 1 (contained).
    It is the mean squared cosine of the principal angles, so rotations *within* the top-k
    (vectors swapping places) leave it unchanged. i and j are capped at the columns given.
    """
    a, b = _as_f64(U_A), _as_f64(U_B)
    return subspace_overlap(a[:, : max(0, int(i))], b[:, : max(0, int(j))])


def max_principal_angle(V0: Any, V1: Any) -> float:
    """Largest principal angle between span(V0) and span(V1), in degrees (0: one span holds
    the other; 90: some direction of the smaller span is orthogonal to the other).

    scipy's sine-based formula: accurate for small angles too, where arccos of a cosine
    near 1 is not.
    """
    v0, v1 = _as_f64(V0), _as_f64(V1)
    if min(v0.shape[1], v1.shape[1]) == 0:
        return float("nan")
    return float(np.degrees(scipy.linalg.subspace_angles(v0, v1).max()))


def subspace_k(k: int, shape: Sequence[int]) -> int:
    """k of the subspace measures: min(k, min(d_out, d_in) // 4), at least 1.

    At k = min(d_out, d_in) the top-k span is the whole space and the overlap is 1 for any
    W₁; a quarter of the dimension keeps it informative (1 only if fine-tuning left the
    dominant subspace in place) while still covering the head of the spectrum. The paper's
    k = 500 survives only for matrices with min(d_out, d_in) ≥ 2000.
    """
    return max(1, min(int(k), min(shape) // 4))


def intruder_counts(U0: Any, U1: Any, k: int, eps_list: Iterable[float]) -> dict[float, int]:
    """:func:`intruder_count` for several thresholds, sharing one similarity matrix."""
    u1 = _as_f64(U1)
    best = best_match_cosine(U0, u1[:, : max(0, int(k))])
    return {float(eps): int(np.sum(best < eps)) for eps in eps_list}


def intruder_count(U0: Any, U1: Any, k: int = 10, eps: float = 0.5) -> int:
    """Number of W₁'s top-k left singular vectors with best |cos| < eps against U0.

    Shuttleworth et al. 2024. Pass the *full* basis of W₀ you have as U0: a vector is
    an intruder only if no singular vector of W₀ resembles it.
    """
    return intruder_counts(U0, U1, k, [eps])[float(eps)]


# ------------------------------------------------------------ per-module summary


def _similarity_metrics(
    w0_svd: SvdTriple, w1_svd: SvdTriple, k: int, k_sub: int
) -> dict[str, float]:
    """Top-k singular-vector similarities (index-matched, best-match) and top-``k_sub``
    subspace similarities between W₀ and W₁, with the k of each."""
    u0, _, vh0 = w0_svd
    u1, _, vh1 = w1_svd
    best = best_match_cosine(u0[:, :k], u1[:, :k])
    return {
        "sim_k": k,
        "sim_left": matched_cosine(u0[:, :k], u1[:, :k]),
        "sim_right": matched_cosine(vh0[:k].T, vh1[:k].T),
        "best_match_left": float(np.mean(best)) if best.size else float("nan"),
        "subspace_k": k_sub,
        "subspace_sim_left": subspace_similarity(u0, u1, k_sub, k_sub),
        "subspace_sim_right": subspace_similarity(vh0.T, vh1.T, k_sub, k_sub),
        "max_angle_left": max_principal_angle(u0[:, :k_sub], u1[:, :k_sub]),
    }


def compare_weights(
    w0: Any,
    w1: Any,
    *,
    k: int = 500,
    intruder_k: int = 10,
    eps: Sequence[float] = (0.5,),
    w0_svd: SvdTriple | None = None,
    delta_sv: Any | None = None,
    method: str = "auto",
) -> dict[str, float]:
    """All spectral metrics for one module (base weight ``w0``, fine-tuned ``w1``).

    Keys: :func:`norm_metrics` of ΔW, then sim_left / sim_right (the paper's index-matched
    cosine of the top-k left / right singular vectors, k capped at min(shape) and at the
    columns of ``w0_svd``; the k used in sim_k), best_match_left (mean best-match |cos| of
    W₁'s top-k left vectors against W₀'s top-k), subspace_sim_left / subspace_sim_right
    (:func:`subspace_similarity` φ of the top-``subspace_k`` left / right vectors, k from
    :func:`subspace_k`, recorded as subspace_k), max_angle_left (largest principal angle
    between those left subspaces, degrees), and ``intruders_{eps:g}`` per eps (W₁'s top
    ``intruder_k`` left vectors against *all* columns of W₀'s U).
    ``w0_svd`` is a cached thin (U, S, Vh) of W₀, shared by every run on one base
    model; ``delta_sv`` a precomputed spectrum of ΔW (e.g. from the LoRA factors), so
    that no dense SVD of ΔW is needed. ``method`` is passed to :func:`top_k_svd` for W₁.
    """
    a0, a1 = _as_f64(w0), _as_f64(w1)
    if a0.shape != a1.shape or a0.ndim != 2:
        raise ValueError(f"w0 and w1 must be matrices of one shape: {a0.shape} vs {a1.shape}")
    if w0_svd is None:
        w0_svd = np.linalg.svd(a0, full_matrices=False)
    u0, s0, vh0 = (_as_f64(x) for x in w0_svd)
    k_sub = min(subspace_k(k, a0.shape), u0.shape[1], vh0.shape[0])
    k = max(0, min(int(k), min(a0.shape), u0.shape[1], vh0.shape[0]))
    n1 = min(max(k, int(intruder_k)), min(a0.shape))
    w1_svd = top_k_svd(a1, n1, method=method)
    sv = singular_values(a1 - a0) if delta_sv is None else _as_f64(delta_sv)
    out = norm_metrics(sv, float(np.linalg.norm(a0)))
    out.update(_similarity_metrics((u0, s0, vh0), w1_svd, k, k_sub))
    for e, count in intruder_counts(u0, w1_svd[0], intruder_k, eps).items():
        out[f"intruders_{e:g}"] = count
    return out
