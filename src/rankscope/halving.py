"""Successive halving over the grid's arms (`search: halving`): fewer full runs, same runs.

An *arm* is one configuration of the grid on one train task (method, rank, alpha, lr,
variant, replay fraction); its runs are its seeds, which always go together. Arms compete
only with the arms of their own train task. Rungs sit at budget fractions f_0 < f_1 < ... < 1
(`HalvingConfig.rungs`: min_fraction x eta^k). At each rung every surviving arm's runs train
to that fraction of the *full run's* schedule: a prefix of the full run (same optimizer
steps, same learning-rate schedule; the step rounded up to a multiple of
`train.logging_steps`, so even the loss log of a resumed run equals the uninterrupted one's).
They score the validation split of their train task (never test), and the best
floor(n / eta) arms (at least one) by the mean over seeds are promoted. A promoted run
resumes from its rung checkpoint, so the run that reaches the full budget is the grid's own
run: same id, same config hash, same results (`rankscope.rungs`). A stopped run keeps its
checkpoint, its rung scores (eval/val@<step>/) and RUNG in its run dir; the store marks it
`stopped` with the budget fraction it reached; `rankscope status` shows it; the report's
selection and recommendation read finished runs only, and `report.stopped` lists the rest. A
later `search: grid` sweep in the same directory finishes the stopped runs from their
checkpoints.

Why a loop of our own and not a library scheduler. Ray Tune's `ASHAScheduler` (Ray 2.60 is
the `ray` extra, and `ray.tune` imports) decides inside `Tuner.fit`, on Tune trials: it would
need the Ray executor for every sweep (a Ray runtime even on a laptop, none of the local,
CPU-pool or Slurm executors), keep its own experiment state and checkpoints beside the run
dirs (two sources of truth), stop an arm by killing its trial rather than at a rung
checkpoint our worker writes, and make a trial of all seeds of an arm (run one after another).
Optuna's `SuccessiveHalvingPruner` (not installed; 5.0.0 is on the local package mirror) is
a rule over values we would report to an in-memory study: it would add optuna, sqlalchemy,
alembic and colorlog to rankscope's install to replace `promote` below (a sort of at most a
few dozen numbers), and both are asynchronous (ASHA): an arm is compared with the arms that
reached its rung *before* it, so which arms survive depends on which runs finished first,
i.e. on the executor's timing. The loop here is synchronous: each rung waits for all its runs,
so the same grid promotes the same arms on every executor, the decisions are reproducible
from the run dirs alone (a rerun redoes nothing), and the existing executors run the rungs
unchanged. What it gives up is ASHA's use of idle workers between rungs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rankscope.executors import EXECUTORS, StopSweep
from rankscope.identity import RunSpec
from rankscope.interrupts import interrupt_handler
from rankscope.methods import METHODS
from rankscope.plan import config_hash
from rankscope.rundir import RunDir
from rankscope.rungs import RUNG_PREFIX, primary_value, read_state, rung_step, write_state
from rankscope.stages import Stages
from rankscope.store import Store, ingest_run
from rankscope.sweep import Sweep

__all__ = ["HalvingOutcome", "arm_name", "arms_of", "promote", "search"]

K = TypeVar("K", bound=Hashable)
Arm = tuple[Any, ...]
"""(train task, method, rank, alpha, lr, variant, replay): a configuration on a train task."""


def arm_of(run: RunSpec) -> Arm:
    return (run.train_task, run.method, run.rank, run.alpha, run.lr, run.variant, run.replay)


def arm_name(arm: Arm) -> str:
    """The arm's readable name, its runs' id without train task and seed
    (`lora-r8-a16-lr1e-3`), built by its method from the arm's fields."""
    task, method, rank, alpha, lr, variant, replay = arm
    spec = RunSpec("", method, task, 0, rank, alpha, lr, variant, replay)
    return METHODS[method].arm_tag(spec)


def arms_of(runs: list[RunSpec]) -> dict[Arm, list[str]]:
    """Arm -> its run ids (one per seed), in plan order; trained runs only."""
    out: dict[Arm, list[str]] = {}
    for run in runs:
        if run.train_task is not None:
            out.setdefault(arm_of(run), []).append(run.run_id)
    return out


def promote(scores: Mapping[K, float | None], eta: int) -> list[K]:
    """The keys that go on to the next rung: the best floor(n / eta) (at least one) of the n
    with a score, highest first; ties keep the mapping's order (the plan's); a key without a
    score (a failed run) never goes on."""
    scored = [(k, v) for k, v in scores.items() if v is not None]
    order = sorted(range(len(scored)), key=lambda i: (-scored[i][1], i))
    keep = max(1, len(scored) // eta) if scored else 0
    return [scored[i][0] for i in order[:keep]]


# ------------------------------------------------------------------ reading the run dirs
def rung_score(
    rd: RunDir, task: str, fraction: float, every: int = 1
) -> tuple[int, float | None] | None:
    """(step, validation score on `task`) of the run at the rung `fraction`: its
    eval/val@<step>/ with the smallest step at or past the rung's (a run resumed after a crash
    right at its rung stops one step later), None when it never reached that rung."""
    rung = rd.rung()
    if rung is None:
        return None
    want = rung_step(fraction, rung["max_steps"], every)
    steps = [
        int(p.name[len(RUNG_PREFIX) :])
        for p in (rd / "eval").glob(f"{RUNG_PREFIX}*")
        if p.name[len(RUNG_PREFIX) :].isdigit()
    ]
    for step in sorted(s for s in steps if s >= want):
        path = rd.eval_file(task, f"{RUNG_PREFIX}{step}")
        if path.is_file():
            return step, primary_value(json.loads(path.read_text())["metrics"])
    return None


def arm_score(sweep: Sweep, run_ids: list[str], task: str, fraction: float) -> float | None:
    """The mean over seeds of the arm's rung scores; None unless every seed has one."""
    every = sweep.cfg.train.logging_steps
    found = [rung_score(sweep.dir.run(r), task, fraction, every) for r in run_ids]
    if any(f is None or f[1] is None for f in found):
        return None
    return sum(f[1] for f in found) / len(found)  # type: ignore[index, misc]


# ------------------------------------------------------------------ the search
@dataclass
class HalvingOutcome:
    rungs: list[float]
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    stopped: dict[str, float] = field(default_factory=dict)
    """Run id -> the budget fraction it was stopped at."""
    decisions: list[dict[str, Any]] = field(default_factory=list)


def search(
    sweep: Sweep,
    store: Store,
    runs: list[RunSpec],
    stages: Stages,
    fail_fast: bool = False,
) -> HalvingOutcome:
    """Run the plan `runs` by successive halving: the shared runs (the base model) whole,
    then the rungs; returns what was done, failed and stopped. Finished runs are skipped."""
    cfg, arms = sweep.cfg, arms_of(runs)
    per_task: dict[str, list[Arm]] = {}
    for arm in arms:
        per_task.setdefault(arm[0], []).append(arm)
    rungs = cfg.halving.rungs(max((len(a) for a in per_task.values()), default=1))
    out = HalvingOutcome(rungs)
    run = _runner(sweep, store, stages, fail_fast, out)
    state: dict[str, Any] = {"eta": cfg.halving.eta, "rungs": rungs, "rung": None}
    write_state(sweep.dir, state)
    run([r.run_id for r in runs if r.train_task is None and not _done(sweep, r)], 1.0)
    alive = list(arms)
    for i, fraction in enumerate(rungs):
        ask = [r for a in alive for r in arms[a] if not _at_least(sweep, runs, r, fraction)]
        state["rung"] = {"index": i, "fraction": fraction, "runs": ask}
        write_state(sweep.dir, state)
        stages.note(f"halving: rung {i + 1}/{len(rungs)}, {len(alive)} arm(s) at {fraction:.3g}")
        run(ask, fraction)
        if fraction >= 1:
            break
        alive = _decide(sweep, arms, alive, fraction, out)
        state["decisions"] = out.decisions
    state["rung"] = None
    lost = [r for a in arms if a not in alive for r in arms[a] if r not in out.failed]
    stopped = [r for r in lost if not _finished(sweep, r)]
    out.stopped = {r: (sweep.dir.run(r).rung() or {}).get("fraction", 0.0) for r in stopped}
    state["stopped"] = out.stopped
    write_state(sweep.dir, state)
    return out


def _decide(
    sweep: Sweep,
    arms: dict[Arm, list[str]],
    alive: list[Arm],
    fraction: float,
    out: HalvingOutcome,
) -> list[Arm]:
    """The arms promoted past the rung `fraction`, per train task; records the decision.
    A finished arm keeps its rung scores (a rerun decides as before); one finished without
    any (a full-budget run made here by a grid sweep) goes on without competing: nothing is
    left to save on it."""
    promoted: list[Arm] = []
    for task in dict.fromkeys(a[0] for a in alive):
        mine = [a for a in alive if a[0] == task]
        scores = {a: arm_score(sweep, arms[a], task, fraction) for a in mine}
        free = [a for a in mine if scores[a] is None and all(_finished(sweep, r) for r in arms[a])]
        for a in free:
            del scores[a]
        up = set(promote(scores, sweep.cfg.halving.eta)) | set(free)
        promoted += [a for a in mine if a in up]
        rows = [
            {
                "arm": arm_name(a),
                "runs": arms[a],
                "val": scores.get(a),
                "promoted": a in up,
            }
            for a in mine
        ]
        out.decisions.append({"fraction": fraction, "train_task": task, "arms": rows})
    return promoted


def _finished(sweep: Sweep, run_id: str) -> bool:
    return sweep.dir.run(run_id).done_hash() is not None


def _done(sweep: Sweep, run: RunSpec) -> bool:
    return sweep.dir.run(run.run_id).done_hash() == config_hash(run, sweep.cfg)


def _at_least(sweep: Sweep, runs: list[RunSpec], run_id: str, fraction: float) -> bool:
    """The run is finished, or (below the full budget) already stopped at `fraction`."""
    rd = sweep.dir.run(run_id)
    spec = next(r for r in runs if r.run_id == run_id)
    if _done(sweep, spec):
        return True
    rung = rd.rung()
    return fraction < 1 and rung is not None and rung["fraction"] >= fraction - 1e-9


def _runner(
    sweep: Sweep, store: Store, stages: Stages, fail_fast: bool, out: HalvingOutcome
) -> Callable[[list[str], float], None]:
    """Hand runs to the configured executor, ingesting each run dir as it ends."""

    def on_finished(run_id: str, error: str | None, fraction: float = 1.0) -> None:
        ingest_run(store, sweep.dir.run(run_id))
        stages.run_end(run_id, error)
        if error is not None:
            out.failed[run_id] = error
            if fail_fast:
                raise StopSweep(run_id)
        elif fraction >= 1:
            out.done.append(run_id)

    def run(run_ids: list[str], fraction: float) -> None:
        if not run_ids:
            return
        stages.start("train", len(run_ids))
        kind = sweep.cfg.executor.kind
        extra: dict[str, object] = {"stages": stages}
        if kind == "local":  # in-process: ingest every unit as it is written (live status)
            extra["on_unit"] = lambda rid: ingest_run(store, sweep.dir.run(rid))
        with interrupt_handler():
            EXECUTORS[kind](
                sweep.cfg,
                sweep.out,
                run_ids,
                lambda rid, err: on_finished(rid, err, fraction),
                **extra,
            )

    return run


def halving_state(sweep: Sweep) -> dict[str, Any]:
    """The adaptive sweep's halving.json: rungs, decisions, stopped runs ({} for a grid)."""
    return read_state(sweep.dir)
