"""Fits across runs: mean ‖ΔW‖_F against rank, per train task, ranked method and module type.

A fit describes a group of runs, not a run, so it goes into the store's `fits` table keyed by
what it was fitted over (train task, method, variant, module type); the driver refits after
every ingestion, from the store alone.
"""

from __future__ import annotations

import numpy as np

from rankscope.methods import METHODS
from rankscope.rundir import RunState
from rankscope.store import Store

FITTED_METHODS = tuple(m.name for m in METHODS.values() if m.ranked)
"""The methods whose runs vary in rank (the registry says which, so a new ranked method is
fitted without touching this module)."""


def write_fits(store: Store) -> None:
    """Fit mean ‖ΔW‖_F against rank per (train task, method, variant) and module type (and
    'all', every module), from the finished runs' spectral rows."""
    from rankscope.analysis.rank_fits import fit_norm_vs_rank

    runs = {
        r["run_id"]: r
        for r in store.runs()
        if r["method"] in FITTED_METHODS and r["status"] == RunState.DONE.value
    }
    by: dict[tuple[str, str, str, str, int], list[float]] = {}
    for row in store.analysis("spectral"):
        run = runs.get(row["run_id"])
        if run is None or row["metric"] != "fro":
            continue
        short = row["module"].rsplit(".", 1)[-1]
        group = (run["train_task"], run["method"], run["variant"] or "")
        for mod in (short, "all"):
            by.setdefault((*group, mod, run["rank"]), []).append(row["value"])
    out = []
    for key in {k[:4] for k in by}:
        ranks = sorted(k[4] for k in by if k[:4] == key)
        norms = [float(np.mean(by[(*key, r)])) for r in ranks]
        for metric, v in fit_norm_vs_rank(ranks, norms).items():
            out.append((*key, metric, float(v)))
    if out:
        store.save_fits(out)
