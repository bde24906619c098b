"""How the update norm grows with LoRA rank: a log and a power fit across the runs of a
sweep (the paper's ‖ΔW‖_F-vs-r curves), numpy only."""

from __future__ import annotations

from typing import Any

import numpy as np


def _as_f64(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


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
