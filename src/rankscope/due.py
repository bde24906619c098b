"""Which runs are due: a run's state as the driver and `rankscope plan` see it.

The run directory speaks first (a DONE marker holding the run's config hash: finished, even if
the store has not seen it yet, e.g. remote work not ingested), then the store. A run made with
another config is `stale` when finished and `changed` when not; both are redone from scratch,
and only with --force when finished (`guard_output_dir`).
"""

from __future__ import annotations

import shutil

from rankscope.config import SweepConfig
from rankscope.errors import ConfigError
from rankscope.plan import RunSpec, config_hash
from rankscope.rundir import RunDir, RunState, SweepDir
from rankscope.store import Store, ingest_run


def _run_dir(cfg: SweepConfig, run: RunSpec) -> RunDir:
    return SweepDir(cfg.out_dir).run(run.run_id)


def store_state(store: Store, run: RunSpec, cfg: SweepConfig) -> RunState:
    """From the store alone: done | failed | stopped (by successive halving) | pending | stale
    (finished with another config)."""
    row = store.run(run.run_id)
    if row is None:
        return RunState.PENDING
    if row["config_hash"] != config_hash(run, cfg):
        return RunState.STALE
    status = row["status"]
    shown = (RunState.DONE, RunState.FAILED, RunState.STOPPED)
    return RunState(status) if status in shown else RunState.PENDING


def driver_state(store: Store, run: RunSpec, cfg: SweepConfig) -> RunState:
    """From the run dir, then the store: done | stale | changed (unfinished work made with
    another config) | pending."""
    h, rd = config_hash(run, cfg), _run_dir(cfg, run)
    done = rd.done_hash()
    if done == h:
        return RunState.DONE
    row = store.run(run.run_id)
    if done is not None or (row and row["status"] == RunState.DONE and row["config_hash"] != h):
        return RunState.STALE
    dir_hash = (rd.config_info() or {}).get("config_hash")
    if (row and row["config_hash"] != h) or dir_hash not in (None, h):
        return RunState.CHANGED
    return RunState.PENDING


def shown_state(store: Store, run: RunSpec, cfg: SweepConfig) -> RunState:
    """What `rankscope plan` shows: the driver's view, and for a pending run what the store
    says of it (a failed one is shown failed)."""
    state = driver_state(store, run, cfg)
    return store_state(store, run, cfg) if state is RunState.PENDING else state


def guard_output_dir(store: Store, cfg: SweepConfig, runs: list[RunSpec], force: bool) -> None:
    """Refuse to mix another sweep's (or another config's) results into this directory."""
    name = store.get_meta("sweep_name")
    if name is not None and name != cfg.name and not force:
        raise ConfigError(
            f"{store.path.parent}: holds results of sweep {name!r}, not "
            f"{cfg.name!r}; choose another output_dir or pass --force"
        )
    stale = [r.run_id for r in runs if driver_state(store, r, cfg) is RunState.STALE]
    if stale and not force:
        raise ConfigError(
            f"{store.path.parent}: {len(stale)} finished run(s) were made with a different "
            f"config ({', '.join(stale[:3])}{' ...' if len(stale) > 3 else ''}); use another "
            "output_dir, or --force to redo them"
        )


def due_runs(
    store: Store, cfg: SweepConfig, runs: list[RunSpec]
) -> tuple[list[RunSpec], list[str]]:
    """(runs to execute, run ids already done). Finished runs the store missed (a crash) are
    ingested; runs made with another config lose their rows and files first."""
    todo, skipped = [], []
    for run in runs:
        state, rd = driver_state(store, run, cfg), _run_dir(cfg, run)
        if state is RunState.DONE:
            row = store.run(run.run_id)
            if (
                not row
                or row["status"] != RunState.DONE
                or row["config_hash"] != config_hash(run, cfg)
            ):
                ingest_run(store, rd)
            skipped.append(run.run_id)
            continue
        if state in (RunState.STALE, RunState.CHANGED):  # redo from scratch
            store.forget_run(run.run_id)
            shutil.rmtree(rd.path, ignore_errors=True)
        todo.append(run)
    return todo, skipped
