"""The sweep driver: plan -> run units through an executor -> ingest -> report.

A run is a unit of work done by `rankscope.runner` in its own run directory; the driver
decides which runs are due (a run whose DONE marker holds its config hash is finished), hands
them to the configured executor, ingests each finished run directory into the results store,
then fits across runs and writes the report. A rerun picks up from the files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rankscope.config import SweepConfig
from rankscope.errors import ConfigError, RankscopeError
from rankscope.plan import BASE_RUN_ID, RunSpec, make_plan
from rankscope.store import Store
from rankscope.tasks import TASKS, Item, TaskContext
from rankscope.tasks.base import check_no_overlap

STORE_NAME = "results.sqlite"


@dataclass
class Stages:
    """Progress callbacks of the stages (no-ops by default).

    The run callbacks are what a log without bars (a batch job's file) is made of:
    `run_start` when a run is handed to a worker (in-process, CPU pool, a GPU subprocess),
    `run_submitted` when it only went to a scheduler's queue (Slurm, Ray), where its real
    start is not seen here, and `run_end` when it finished (error None) or failed.
    """

    start: Callable[[str, int], None] = lambda stage, total: None
    advance: Callable[[str, int], None] = lambda stage, n: None
    step: Callable[[str, int, int], None] = lambda label, done, total: None
    note: Callable[[str], None] = lambda msg: None
    run_start: Callable[[str], None] = lambda run_id: None
    run_submitted: Callable[[str], None] = lambda run_id: None
    run_end: Callable[[str, str | None], None] = lambda run_id, error: None


def task_context(cfg: SweepConfig) -> TaskContext:
    from rankscope.world.generator import spec_for

    return TaskContext(
        world_spec=spec_for(cfg.model.world, cfg.model.world_seed),
        data=cfg.data,
        train_tasks=tuple(cfg.tasks.train),
    )


class Sweep:
    """A sweep's config, output dir and tasks' items (loaded once per process)."""

    def __init__(self, cfg: SweepConfig, stages: Stages | None = None):
        self.cfg = cfg
        self.out = cfg.out_dir
        self.stages = stages or Stages()
        self.ctx = task_context(cfg)
        self._items: dict[tuple[str, str], list[Item]] = {}

    def items(self, task: str, split: str) -> list[Item]:
        key = (task, split)
        if key not in self._items:
            t = self.cfg.tasks
            limit = t.max_train_items if split == "train" else t.max_eval_items
            self._items[key] = TASKS[task].items(split, self.ctx, limit)
        return self._items[key]

    def check_leaks(self) -> None:
        """Refuse eval items that also occur in a training set. Compared zero-shot: few-shot
        exemplars in the eval prompts would hide a leaked question from the hash."""
        ctx = self.ctx
        if self.cfg.data.shots:
            ctx = dataclasses.replace(ctx, data=dataclasses.replace(self.cfg.data, shots=0))
        limit = self.cfg.tasks.max_eval_items
        for et in self.cfg.tasks.eval:
            evals = TASKS[et].items("test", ctx, limit) if ctx is not self.ctx else None
            for tt in self.cfg.tasks.train:
                check_no_overlap(tt, self.items(tt, "train"), et, evals or self.items(et, "test"))

    def run_dir(self, run: RunSpec | str) -> Path:
        return self.out / "runs" / (run if isinstance(run, str) else run.run_id)


_SWEEPS: dict[str, Sweep] = {}


def sweep_for(cfg: SweepConfig) -> Sweep:
    """This process's Sweep for a config: the in-process path reuses its items across runs."""
    key = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    if key not in _SWEEPS:
        _SWEEPS.clear()
        _SWEEPS[key] = Sweep(cfg)
    return _SWEEPS[key]


@dataclass
class SweepOutcome:
    out_dir: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    report: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


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
        m["task"]: m for m in store.metrics() if m["run_id"] == BASE_RUN_ID and m["metric"] == "acc"
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


def run_status(store: Store, run: RunSpec, cfg: SweepConfig) -> str:
    """From the store: done | failed | pending | stale (finished with a different config)."""
    row = store.run(run.run_id)
    if row is None:
        return "pending"
    if row["config_hash"] != run.config_hash(cfg):
        return "stale"
    return row["status"] if row["status"] in ("done", "failed") else "pending"


def run_state(store: Store, run: RunSpec, cfg: SweepConfig) -> str:
    """From the run dir, then the store: done | stale | changed (unfinished work made with
    another config) | pending."""
    from rankscope.progress import config_info, read_text

    h, rdir = run.config_hash(cfg), cfg.out_dir / "runs" / run.run_id
    done = read_text(rdir / "DONE")
    if done == h:
        return "done"
    row = store.run(run.run_id)
    if done is not None or (row and row["status"] == "done" and row["config_hash"] != h):
        return "stale"
    dir_hash = (config_info(rdir) or {}).get("config_hash")
    if (row and row["config_hash"] != h) or dir_hash not in (None, h):
        return "changed"
    return "pending"


def guard_output_dir(store: Store, cfg: SweepConfig, runs: list[RunSpec], force: bool) -> None:
    """Refuse to mix another sweep's (or another config's) results into this directory."""
    name = store.get_meta("sweep_name")
    if name is not None and name != cfg.name and not force:
        raise ConfigError(
            f"{store.path.parent}: holds results of sweep {name!r}, not "
            f"{cfg.name!r}; choose another output_dir or pass --force"
        )
    stale = [r.run_id for r in runs if run_state(store, r, cfg) == "stale"]
    if stale and not force:
        raise ConfigError(
            f"{store.path.parent}: {len(stale)} finished run(s) were made with a different "
            f"config ({', '.join(stale[:3])}{' ...' if len(stale) > 3 else ''}); use another "
            "output_dir, or --force to redo them"
        )


def _write_meta(store: Store, cfg: SweepConfig) -> None:
    store.set_meta(
        {
            "sweep_name": cfg.name,
            "config_json": json.dumps(cfg.to_dict()),
            "retention_task": cfg.tasks.retention,
            "eval_tasks": json.dumps(cfg.tasks.eval),
            "train_tasks": json.dumps(cfg.tasks.train),
        }
    )


def _due(store: Store, sweep: Sweep, runs: list[RunSpec], outcome: SweepOutcome) -> list[RunSpec]:
    """The runs to execute; finished ones are ingested if the store missed them (a crash)."""
    from rankscope.runner import ingest_run

    todo = []
    for run in runs:
        state = run_state(store, run, sweep.cfg)
        if state == "done":
            row = store.run(run.run_id)
            if (
                not row
                or row["status"] != "done"
                or row["config_hash"] != run.config_hash(sweep.cfg)
            ):
                ingest_run(store, sweep.run_dir(run))
            outcome.skipped.append(run.run_id)
            continue
        if state in ("stale", "changed"):  # redo from scratch: drop its rows and files
            store.forget_run(run.run_id)
            shutil.rmtree(sweep.run_dir(run), ignore_errors=True)
        todo.append(run)
    return todo


def run_sweep(
    cfg: SweepConfig,
    *,
    force: bool = False,
    fail_fast: bool = False,
    stages: Stages | None = None,
    report: bool = True,
) -> SweepOutcome:
    """Run every due run of the sweep through its executor, then write the report."""
    from contextlib import closing

    from rankscope.analyze import fit_rows
    from rankscope.preflight import check_model_fits
    from rankscope.runner import write_sweep_file
    from rankscope.sweeplock import hold

    quiet_libraries()
    sweep, stages = sweep_for(cfg), stages or Stages()
    sweep.check_leaks()  # before anything is written
    runs = make_plan(cfg)
    if cfg.model.name != "toy":  # an unloadable model fails once, before anything is written
        from rankscope.methods import resolve_model_path

        resolve_model_path(cfg.model)
    check_model_fits(cfg)  # LoRA targets exist, ranks fit: before anything is written
    sweep.out.mkdir(parents=True, exist_ok=True)
    outcome = SweepOutcome(sweep.out)
    with hold(sweep.out), closing(Store(sweep.out / STORE_NAME)) as store:  # one driver at a time
        guard_output_dir(store, cfg, runs, force)
        _write_meta(store, cfg)
        write_sweep_file(cfg, sweep.out)  # what workers read
        todo = _due(store, sweep, runs, outcome)
        _prepare_base(sweep, stages, bool(todo))
        stages.start("train", len(todo))
        stages.start("evaluate", len(todo) * len(cfg.tasks.eval))
        if cfg.analysis.enabled:
            stages.start("analyze", len(todo))
        _execute(sweep, store, [r.run_id for r in todo], outcome, stages, fail_fast)
        if cfg.analysis.enabled:
            fit_rows(store)
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
    from rankscope.executors import EXECUTORS, StopSweep
    from rankscope.runner import ingest_run
    from rankscope.train import interrupt_handler

    def on_finished(run_id: str, error: str | None) -> None:
        ingest_run(store, sweep.run_dir(run_id))
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
        extra["on_unit"] = lambda rid: ingest_run(store, sweep.run_dir(rid))
    with interrupt_handler():
        try:
            EXECUTORS[kind](sweep.cfg, sweep.out, run_ids, on_finished, **extra)
        except StopSweep:
            pass


def analyze_only(cfg: SweepConfig, stages: Stages | None = None) -> Path:
    """`rankscope analyze`: the analyze stage alone, on a sweep's finished runs."""
    from contextlib import closing

    from rankscope.analyze import fit_rows
    from rankscope.runner import analyze_done_run, ingest_run
    from rankscope.sweeplock import hold

    quiet_libraries()
    sweep, stages = sweep_for(cfg), stages or Stages()
    path = sweep.out / STORE_NAME
    if not path.exists():
        raise RankscopeError(f"{sweep.out}: no {STORE_NAME} here; run the sweep first")
    with hold(sweep.out), closing(Store(path)) as store:  # not while a driver runs the sweep
        done = [r for r in make_plan(cfg) if run_state(store, r, cfg) == "done"]
        stages.start("analyze", len(done))
        for run in done:
            analyze_done_run(sweep, run, stages)
            ingest_run(store, sweep.run_dir(run))
        fit_rows(store)
    return path


def reindex_sweep(out_dir: Path) -> int:
    """Rebuild the results store from the run directories, in one transaction; runs found."""
    from contextlib import closing

    from rankscope.analyze import fit_rows
    from rankscope.runner import ingest_run, read_sweep_file
    from rankscope.sweeplock import hold

    out_dir = Path(out_dir)
    cfg = read_sweep_file(out_dir)
    run_dirs = sorted(p for p in (out_dir / "runs").glob("*") if (p / "config.yaml").is_file())
    with hold(out_dir), closing(Store(out_dir / STORE_NAME)) as store:  # not while one runs
        with store.transaction():
            store.clear()
            _write_meta(store, cfg)
            for rdir in run_dirs:
                ingest_run(store, rdir)
            fit_rows(store)
    return len(run_dirs)


def quiet_libraries() -> None:
    """Our progress bars speak for the libraries' own bars and info logs."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("transformers", "peft", "datasets", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _prepare_base(sweep: Sweep, stages: Stages, needed: bool) -> None:
    """Build/cache the toy base model once, up front, for a world that ships none (workers
    then only load it); a shipped world needs nothing."""
    if not needed or sweep.cfg.model.name != "toy":
        return
    from rankscope.world.build import ensure_base_model, needs_build

    spec = sweep.ctx.world_spec
    cache = Path(sweep.cfg.model.cache_dir) if sweep.cfg.model.cache_dir else None
    if not needs_build(spec, cache):
        return
    stages.start("build toy base model", spec.pretrain_steps)
    ensure_base_model(
        spec, cache, on_step=lambda s, n, loss: stages.advance("build toy base model", 1)
    )


def write_sweep_report(out_dir: Path) -> dict[str, Path]:
    from rankscope.report import write_report

    return write_report(Path(out_dir) / STORE_NAME, Path(out_dir) / "report")
