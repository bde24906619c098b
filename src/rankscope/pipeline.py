"""The sweep driver: plan -> due -> execute -> ingest -> fit -> report.

A run is a unit of work done by `rankscope.runner` in its own run directory. The driver makes
the plan, decides which runs are due (`rankscope.due`: a run whose DONE marker holds its config
hash is finished), hands them to the configured executor, ingests each finished run directory
into the results store (`rankscope.store.ingest`), then fits across runs (`rankscope.fits`) and
writes the report. A rerun picks up from the files.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from rankscope import halving
from rankscope.config import SweepConfig
from rankscope.due import driver_state, due_runs, guard_output_dir
from rankscope.errors import DataError, RankscopeError
from rankscope.executors import EXECUTORS, StopSweep
from rankscope.fits import write_fits
from rankscope.interrupts import interrupt_handler
from rankscope.libs import quiet_libraries
from rankscope.models import resolve_model_path
from rankscope.plan import BASE_RUN_ID, RunSpec, make_plan
from rankscope.preflight import check_model_fits
from rankscope.rundir import STORE_NAME, RunState, SweepDir, read_text
from rankscope.runner import analyze_done_run
from rankscope.stages import Stages
from rankscope.store import Store, ingest_run, store_problem
from rankscope.sweep import (
    Sweep,
    read_sweep_file,
    sweep_for,
    write_sweep_file,
)
from rankscope.sweeplock import hold
from rankscope.world.build import ensure_base_model, needs_build

log = logging.getLogger(__name__)


@dataclass
class SweepOutcome:
    out_dir: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    report: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    stopped: dict[str, float] = field(default_factory=dict)
    """search: halving: run id -> the budget fraction it was stopped at."""


TOY_GENERAL_FLOOR = 0.90  # what the toy world is built for: its base model knows its facts
TOY_NEW_DOMAINS = ("toy-med", "toy-legal")
TOY_NEAR_CHANCE_SE = 3.0  # further above chance than this many standard errors is not "near"


def toy_world_warnings(cfg: SweepConfig, store: Store) -> list[str]:
    """The toy world's promises checked on what was measured: the base model knows its general
    facts (>= 90 % on toy-general) and is near chance on the new domains (within 3 standard
    errors). Other world seeds can fall short (README "Toy world")."""
    if cfg.model.name != "toy":
        return []
    base = {
        m["task"]: m
        for m in store.metrics()
        if m["run_id"] == BASE_RUN_ID and m["metric"] == "acc" and m["split"] == "test"
    }
    world = f"world '{cfg.model.world}', seed {cfg.model.world_seed}"
    out = []
    general = base.get("toy-general")
    if general and general["value"] < TOY_GENERAL_FLOOR:
        out.append(
            f"the toy base model ({world}) scores {100 * general['value']:.1f} % on "
            f"toy-general, under the {100 * TOY_GENERAL_FLOOR:.0f} % the toy world is built "
            "for: forgetting is measured from a lower start here; another model.world_seed "
            "may do better"
        )
    chance = store.chance_levels()
    for task in TOY_NEW_DOMAINS:
        m, c = base.get(task), chance.get(task)
        if not m or c is None or not m["stderr"]:
            continue
        z = (m["value"] - c) / m["stderr"]
        if z > TOY_NEAR_CHANCE_SE:
            out.append(
                f"the toy base model ({world}) scores {100 * m['value']:.1f} % on {task}, "
                f"{z:.1f} standard errors above chance ({100 * c:.1f} %): it partly solves "
                "the domain before any fine-tuning, so gains there start higher up; another "
                "model.world_seed may do better"
            )
    return out


def _write_meta(store: Store, cfg: SweepConfig, out: SweepDir) -> None:
    """The sweep's facts the report reads: its config, tasks and what decontamination
    dropped from training (`<out>/decontamination.json`, when the sweep wrote one)."""
    decontam = read_text(out.decontam_file)
    store.set_meta(
        {
            "sweep_name": cfg.name,
            "config_json": json.dumps(cfg.to_dict()),
            "retention_task": cfg.tasks.retention,
            "eval_tasks": json.dumps(cfg.tasks.eval),
            "train_tasks": json.dumps(cfg.tasks.train),
            **({"decontamination": decontam} if decontam else {}),
        }
    )


def _preflight(sweep: Sweep) -> list[RunSpec]:
    """The plan, once every check that needs no output has passed: nothing is written when
    the model cannot load, or a LoRA target or rank does not fit it. Training items that
    overlap an eval item are dropped here (`Sweep.check_leaks`), not refused."""
    sweep.check_leaks()
    runs = make_plan(sweep.cfg)
    if sweep.cfg.model.name != "toy":
        resolve_model_path(sweep.cfg.model)
    check_model_fits(sweep.cfg)
    sweep.out.mkdir(parents=True, exist_ok=True)
    return runs


def run_sweep(
    cfg: SweepConfig,
    *,
    force: bool = False,
    fail_fast: bool = False,
    stages: Stages | None = None,
    report: bool = True,
) -> SweepOutcome:
    """Run every due run of the sweep through its executor, then write the report."""
    quiet_libraries()
    sweep, stages = sweep_for(cfg), stages or Stages()
    runs = _preflight(sweep)
    outcome = SweepOutcome(sweep.out)
    store_path = sweep.dir.store_path  # an empty file (a sweep killed as it began): no store
    with hold(sweep.out), closing(Store(store_path, empty_ok=True)) as store:  # one driver
        guard_output_dir(store, cfg, runs, force)
        sweep.write_decontamination()  # what the report states was dropped from training
        _write_meta(store, cfg, sweep.dir)
        write_sweep_file(cfg, sweep.out)  # what workers read
        todo, outcome.skipped = due_runs(store, cfg, runs)
        _prepare_base(sweep, stages, bool(todo))
        if cfg.search == "halving":  # successive halving over the same runs
            _halve(sweep, store, runs, outcome, stages, fail_fast)
        else:
            stages.start("train", len(todo))
            stages.start("evaluate", len(todo) * len(cfg.tasks.eval))
            if cfg.analysis.enabled:
                stages.start("analyze", len(todo))
            _execute(sweep, store, [r.run_id for r in todo], outcome, stages, fail_fast)
        if cfg.analysis.enabled:
            write_fits(store)
        outcome.warnings = toy_world_warnings(cfg, store)
        if report:
            stages.start("report", 1)
            outcome.report = write_sweep_report(sweep.out)
            stages.advance("report", 1)
    return outcome


def _execute(
    sweep: Sweep,
    store: Store,
    run_ids: list[str],
    outcome: SweepOutcome,
    stages: Stages,
    fail_fast: bool,
) -> None:
    """Hand the runs to the executor; ingest each run dir as it finishes."""

    def on_finished(run_id: str, error: str | None) -> None:
        ingest_run(store, sweep.dir.run(run_id))
        stages.run_end(run_id, error)  # every executor reports a finished run here
        if error is None:
            outcome.done.append(run_id)
            return
        outcome.failed[run_id] = error
        if fail_fast:
            raise StopSweep(run_id)

    kind = sweep.cfg.executor.kind
    extra: dict[str, object] = {"stages": stages}  # executors report runs they start (submit)
    if kind == "local":  # in-process: ingest every unit as it is written (live status)
        extra["on_unit"] = lambda rid: ingest_run(store, sweep.dir.run(rid))
    with interrupt_handler():
        try:
            EXECUTORS[kind](sweep.cfg, sweep.out, run_ids, on_finished, **extra)
        except StopSweep:
            pass


def _halve(
    sweep: Sweep,
    store: Store,
    runs: list[RunSpec],
    outcome: SweepOutcome,
    stages: Stages,
    fail_fast: bool,
) -> None:
    """`search: halving`: the rungs of `rankscope.halving`, their outcome into `outcome`."""
    try:
        got = halving.search(sweep, store, runs, stages, fail_fast)
    except StopSweep:
        return
    outcome.done += got.done
    outcome.failed.update(got.failed)
    outcome.stopped = got.stopped


def analyze_only(cfg: SweepConfig, stages: Stages | None = None) -> Path:
    """`rankscope analyze`: the analyze stage alone, on a sweep's finished runs."""
    quiet_libraries()
    sweep, stages = sweep_for(cfg), stages or Stages()
    path = sweep.dir.store_path
    if not path.exists():
        raise RankscopeError(f"{sweep.out}: no {STORE_NAME} here; run the sweep first")
    with hold(sweep.out), closing(Store(path)) as store:  # not while a driver runs the sweep
        done = [r for r in make_plan(cfg) if driver_state(store, r, cfg) is RunState.DONE]
        stages.start("analyze", len(done))
        for run in done:
            analyze_done_run(sweep, run, stages)
            ingest_run(store, sweep.dir.run(run.run_id))
        write_fits(store)
    return path


def reindex_sweep(
    out_dir: Path, *, force: bool = False, warn: Callable[[str], None] | None = None
) -> int:
    """Rebuild the results store from the run directories, in one transaction; the number of
    run dirs ingested. Reindex is recovery, so a run dir with a damaged file is skipped with
    a warning naming the file (`warn`) and the others are rebuilt; a store SQLite cannot read
    is moved aside (`results.sqlite.corrupt-<n>`) and rebuilt. Refused, leaving the store as
    it was, when finished runs it holds would be dropped (their run dirs are gone or were
    skipped), unless `force`."""
    warn = warn or log.warning
    out = SweepDir(Path(out_dir))
    cfg = read_sweep_file(out.root)
    run_dirs = out.run_dirs()
    with hold(out.root):  # not while a driver runs the sweep
        _set_aside_damaged(out.store_path, warn)
        with closing(Store(out.store_path, empty_ok=True)) as store, store.transaction():
            held = {r["run_id"] for r in store.runs() if r["status"] == RunState.DONE.value}
            store.clear()
            _write_meta(store, cfg, out)
            skipped = _ingest_all(store, run_dirs, warn)
            lost = sorted(held - {r["run_id"] for r in store.runs()})
            if lost and not force:  # raising rolls the transaction back: the store is kept
                raise RankscopeError(_dropping(out, len(held), lost, run_dirs, skipped))
            write_fits(store)
    return len(run_dirs) - len(skipped)


def _ingest_all(store: Store, run_dirs: list, warn: Callable[[str], None]) -> dict[str, str]:
    """Ingest every run dir, each undone alone when a file of it is damaged: {run: why}."""
    skipped = {}
    for rd in run_dirs:
        try:
            with store.savepoint():
                ingest_run(store, rd)
        except DataError as e:
            skipped[rd.path.name] = str(e)
            warn(f"skipped run {rd.path.name}: {e}")
    return skipped


def _dropping(out: SweepDir, held: int, lost: list[str], run_dirs: list, skipped: dict) -> str:
    """Why a reindex is refused: finished runs of the store it would drop."""
    runs_dir = out.root / "runs"
    if not run_dirs:
        why = f"no run directories were found in {runs_dir}"
    else:
        why = f"{len(lost)} of them have no readable run directory in {runs_dir}"
        why += f" (e.g. {lost[0]}" + (f": {skipped[lost[0]]})" if lost[0] in skipped else ")")
    return (
        f"{out.store_path} holds {held} finished run(s), but {why}; rebuilding would drop "
        "their results. Restore the run directories, or pass --force to rebuild from what "
        "is there (the store is unchanged)"
    )


def _set_aside_damaged(path: Path, warn: Callable[[str], None]) -> None:
    """A store SQLite cannot read (or a foreign SQLite file) is renamed to
    `<name>.corrupt-<n>` (with its -wal/-shm files), never deleted, so a rebuild can start."""
    if not path.is_file() or path.stat().st_size == 0 or store_problem(path) is None:
        return
    n = 1
    while path.with_name(f"{path.name}.corrupt-{n}").exists():
        n += 1
    aside = path.with_name(f"{path.name}.corrupt-{n}")
    for suffix in ("-wal", "-shm"):
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            os.replace(extra, aside.with_name(aside.name + suffix))
    os.replace(path, aside)
    warn(f"{path} could not be read as a results store; moved it aside to {aside}")


def _prepare_base(sweep: Sweep, stages: Stages, needed: bool) -> None:
    """Build/cache the toy base model once, up front, for a world that ships none (workers
    then only load it); a shipped world needs nothing."""
    if not needed or sweep.cfg.model.name != "toy":
        return
    spec = sweep.ctx.world_spec
    cache = Path(sweep.cfg.model.cache_dir) if sweep.cfg.model.cache_dir else None
    if not needs_build(spec, cache):
        return
    stages.start("build toy base model", spec.pretrain_steps)
    ensure_base_model(
        spec, cache, on_step=lambda s, n, loss: stages.advance("build toy base model", 1)
    )


def write_sweep_report(out_dir: Path) -> dict[str, Path]:
    """report.md, report.html, report_tables.tex and figures/ from the store alone."""
    from rankscope.report import write_report  # matplotlib: only when a report is written

    out = SweepDir(Path(out_dir))
    return write_report(out.store_path, out.root / "report")
