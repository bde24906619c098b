"""Spectral analysis of fine-tuning weight updates.

Pure functions (no I/O, no model code) behind the "how far did fine-tuning move the
weights, and in which directions" part of the report:

* norms and effective dimensionality of the update ΔW = W₁ − W₀ ("How Much is Too
  Much? Exploring LoRA Rank Trade-offs": the size of the update grows with LoRA rank);
* similarity of the singular subspaces of W₀ and W₁ and *intruder dimensions*
  (Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: An Illusion of Equivalence"):
  top singular vectors of W₁ that are nearly orthogonal to every singular vector of W₀.

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


def _similarity_metrics(w0_svd: SvdTriple, w1_svd: SvdTriple, k: int) -> dict[str, float]:
    """Top-k left/right subspace similarities between W₀ and W₁."""
    u0, _, vh0 = w0_svd
    u1, _, vh1 = w1_svd
    best = best_match_cosine(u0[:, :k], u1[:, :k])
    return {
        "sim_left": matched_cosine(u0[:, :k], u1[:, :k]),
        "sim_right": matched_cosine(vh0[:k].T, vh1[:k].T),
        "best_match_left": float(np.mean(best)) if best.size else float("nan"),
        "overlap_left": subspace_overlap(u0[:, :k], u1[:, :k]),
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

    Keys: :func:`norm_metrics` of ΔW, then sim_left / sim_right (matched cosine of the
    top-k left / right singular vectors, k capped at min(shape) and at the columns of
    ``w0_svd``), best_match_left (mean best-match |cos| of W₁'s top-k left vectors
    against W₀'s top-k), overlap_left, and ``intruders_{eps:g}`` per eps (W₁'s top
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
    k = max(0, min(int(k), min(a0.shape), u0.shape[1], vh0.shape[0]))
    n1 = min(max(k, int(intruder_k)), min(a0.shape))
    w1_svd = top_k_svd(a1, n1, method=method)
    sv = singular_values(a1 - a0) if delta_sv is None else _as_f64(delta_sv)
    out = norm_metrics(sv, float(np.linalg.norm(a0)))
    out.update(_similarity_metrics((u0, s0, vh0), w1_svd, k))
    for e, count in intruder_counts(u0, w1_svd[0], intruder_k, eps).items():
        out[f"intruders_{e:g}"] = count
    return out


# ------------------------------------------------------------------ rank fits


def _linfit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares y ≈ intercept + slope·x; returns (intercept, slope, R²)."""
    design = np.column_stack([np.ones_like(x), x])
    (intercept, slope), *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = float(np.sum((y - intercept - slope * x) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot > 0:
        r2 = 1.0 - resid / ss_tot
    else:  # constant y: a perfect (flat) fit, or undefined
        r2 = 1.0 if resid <= 1e-24 else float("nan")
    return float(intercept), float(slope), r2


def fit_norm_vs_rank(ranks: Any, norms: Any) -> dict[str, float]:
    """Fit how the update norm grows with LoRA rank r.

    log fit: norm = a + b·ln r (keys log_a, log_b, log_r2); power fit: norm = c·r^p,
    fitted linearly in log-log space, R² also in log space (pow_c, pow_p, pow_r2).
    Points with r ≤ 0 or non-finite values are dropped; the power fit also needs
    norm > 0. NaNs for a fit with fewer than 2 distinct ranks.
    """
    r, y = _as_f64(ranks).ravel(), _as_f64(norms).ravel()
    ok = np.isfinite(r) & np.isfinite(y) & (r > 0)
    r, y = r[ok], y[ok]
    nan = float("nan")
    out = dict.fromkeys(("log_a", "log_b", "log_r2", "pow_c", "pow_p", "pow_r2"), nan)
    if np.unique(r).size >= 2:
        out["log_a"], out["log_b"], out["log_r2"] = _linfit(np.log(r), y)
    pos = y > 0
    if np.unique(r[pos]).size >= 2:
        ln_c, out["pow_p"], out["pow_r2"] = _linfit(np.log(r[pos]), np.log(y[pos]))
        out["pow_c"] = float(np.exp(ln_c))
    return out
