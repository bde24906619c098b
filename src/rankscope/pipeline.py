"""The sweep: plan -> train -> evaluate -> report, each stage skipped when its results exist.

Stages talk through files: a run directory holds what training made (config.yaml, adapter/
or model/, train_log.jsonl, TRAINED), the store holds metrics; a rerun picks up from there.
"""

from __future__ import annotations

import json
import os
import shutil
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rankscope.config import SweepConfig, dump_yaml
from rankscope.errors import ConfigError, RankscopeError
from rankscope.plan import RunSpec, make_plan
from rankscope.store import Store
from rankscope.tasks import TASKS, Item, TaskContext
from rankscope.tasks.base import check_no_overlap

STORE_NAME = "results.sqlite"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def task_context(cfg: SweepConfig) -> TaskContext:
    from rankscope.world.generator import spec_for

    return TaskContext(
        world_spec=spec_for(cfg.model.world, cfg.model.world_seed),
        data=cfg.data,
        train_tasks=tuple(cfg.tasks.train),
    )


@dataclass
class Stages:
    """Progress callbacks of the stages (no-ops by default)."""

    start: Callable[[str, int], None] = lambda stage, total: None
    advance: Callable[[str, int], None] = lambda stage, n: None
    step: Callable[[str, int, int], None] = lambda label, done, total: None
    note: Callable[[str], None] = lambda msg: None


@dataclass
class SweepOutcome:
    out_dir: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    report: dict[str, Path] = field(default_factory=dict)


def run_status(store: Store, run: RunSpec, cfg: SweepConfig) -> str:
    """done | failed | pending | stale (a finished run made with a different config)."""
    row = store.run(run.run_id)
    if row is None:
        return "pending"
    if row["config_hash"] != run.config_hash(cfg):
        return "stale"
    return row["status"] if row["status"] in ("done", "failed") else "pending"


def guard_output_dir(store: Store, cfg: SweepConfig, runs: list[RunSpec], force: bool) -> None:
    """Refuse to mix another sweep's (or another config's) results into this directory."""
    name = store.get_meta("sweep_name")
    if name is not None and name != cfg.name and not force:
        raise ConfigError(
            f"{store.path.parent}: holds results of sweep {name!r}, not "
            f"{cfg.name!r}; choose another output_dir or pass --force"
        )
    stale = [r.run_id for r in runs if run_status(store, r, cfg) == "stale"]
    if stale and not force:
        raise ConfigError(
            f"{store.path.parent}: {len(stale)} finished run(s) were made with a different "
            f"config ({', '.join(stale[:3])}{' ...' if len(stale) > 3 else ''}); use another "
            "output_dir, or --force to redo them"
        )


class Sweep:
    """One sweep's execution state: config, store, tasks' items, progress."""

    def __init__(self, cfg: SweepConfig, stages: Stages | None = None):
        self.cfg = cfg
        self.out = cfg.out_dir
        self.stages = stages or Stages()
        self.ctx = task_context(cfg)
        self._items: dict[tuple[str, str], list[Item]] = {}

    def items(self, task: str, split: str) -> list[Item]:
        key = (task, split)
        if key not in self._items:
            limit = (
                self.cfg.tasks.max_train_items
                if split == "train"
                else self.cfg.tasks.max_eval_items
            )
            self._items[key] = TASKS[task].items(split, self.ctx, limit)
        return self._items[key]

    def check_leaks(self) -> None:
        for tt in self.cfg.tasks.train:
            for et in self.cfg.tasks.eval:
                check_no_overlap(tt, self.items(tt, "train"), et, self.items(et, "test"))

    def run_dir(self, run: RunSpec) -> Path:
        return self.out / "runs" / run.run_id

    # ---------------------------------------------------------------- one run
    def execute(self, store: Store, run: RunSpec, prov: dict[str, Any]) -> None:
        from rankscope.methods import count_params, load_for_eval

        cfg, rdir = self.cfg, self.run_dir(run)
        write_atomic(
            rdir / "config.yaml",
            dump_yaml(
                {
                    "run": asdict(run),
                    "config_hash": run.config_hash(cfg),
                    "config": cfg.to_dict(),
                    "provenance": prov,
                }
            ),
        )
        store.upsert_run(**_run_row(run, cfg, rdir), status="running", stage="train", error=None)
        model = None
        if run.method != "base" and not (rdir / "TRAINED").exists():
            model, tok = self._train(store, run, rdir)
        elif run.method != "base":
            self._ingest_train(store, run, rdir)
        self.stages.advance("train", 1)
        store.update_run(run.run_id, stage="evaluate")
        for task in cfg.tasks.eval:
            if store.has_metrics(run.run_id, task):
                self.stages.advance("evaluate", 1)
                continue
            if model is None:
                model, tok = load_for_eval(run, rdir, cfg.model)
            if run.method == "base":
                _, total = count_params(model)
                store.update_run(run.run_id, trainable_params=0, total_params=total)
            self._evaluate(store, run, model, tok, task)
        store.update_run(run.run_id, status="done", stage=None)
        write_atomic(rdir / "DONE", run.config_hash(cfg))

    def _train(self, store: Store, run: RunSpec, rdir: Path):
        from rankscope.methods import METHODS, count_params, load_base
        from rankscope.train import train

        cfg = self.cfg
        base, tok, _ = load_base(cfg.model)
        model = METHODS[run.method].prepare(base, run, cfg)
        trainable, total = count_params(model)
        items = self.items(run.train_task, "train")
        label = f"  {run.run_id}"
        rec = train(
            model,
            tok,
            items,
            cfg,
            run.lr,
            run.seed,
            rdir / "trainer",
            on_progress=lambda d, t: self.stages.step(label, d, t),
        )
        METHODS[run.method].save(model, tok, rdir)
        shutil.rmtree(rdir / "trainer", ignore_errors=True)
        log = rec.pop("log")
        write_atomic(rdir / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in log))
        rec.update(trainable_params=trainable, total_params=total)
        write_atomic(rdir / "TRAINED", json.dumps(rec))  # marker written last
        store.save_train_result(run.run_id, rec, log)
        return model, tok

    def _ingest_train(self, store: Store, run: RunSpec, rdir: Path) -> None:
        """Training finished earlier: make sure its record is in the store (crash-safe)."""
        row = store.run(run.run_id)
        if row and row.get("final_train_loss") is not None:
            return
        rec = json.loads((rdir / "TRAINED").read_text())
        lines = (rdir / "train_log.jsonl").read_text().splitlines()
        store.save_train_result(run.run_id, rec, [json.loads(x) for x in lines if x])

    def _evaluate(self, store: Store, run: RunSpec, model: Any, tok: Any, task: str) -> None:
        from rankscope.evaluate import evaluate

        items = self.items(task, "test")
        label = f"  {run.run_id} on {task}"
        done = [0]

        def progress(n: int) -> None:
            done[0] += n
            self.stages.step(label, done[0], len(items))

        metrics, preds = evaluate(
            model,
            tok,
            TASKS[task],
            items,
            self.cfg.eval.batch_size,
            self.cfg.eval.max_new_tokens,
            progress,
        )
        store.save_eval(run.run_id, task, metrics, preds)
        self.stages.advance("evaluate", 1)


def _run_row(run: RunSpec, cfg: SweepConfig, rdir: Path) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "model": cfg.model.name,
        "train_task": run.train_task,
        "method": run.method,
        "rank": run.rank,
        "alpha": run.alpha,
        "lr": run.lr,
        "seed": run.seed,
        "variant": run.variant,
        "config_hash": run.config_hash(cfg),
        "run_dir": str(rdir),
        "log_path": str(rdir / "config.yaml"),
    }


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


def _forget(store: Store, sweep: Sweep, run: RunSpec) -> None:
    """--force on a stale run: drop its rows and files so it is redone from scratch."""
    with store.transaction() as c:
        for table in ("runs", "metrics", "predictions", "train_log", "analysis"):
            c.execute(f"DELETE FROM {table} WHERE run_id=?", (run.run_id,))
    shutil.rmtree(sweep.run_dir(run), ignore_errors=True)


def run_sweep(
    cfg: SweepConfig,
    *,
    force: bool = False,
    fail_fast: bool = False,
    stages: Stages | None = None,
    report: bool = True,
) -> SweepOutcome:
    """Run every pending run of the sweep, then write the report."""
    from rankscope.provenance import provenance

    quiet_libraries()
    sweep = Sweep(cfg, stages)
    sweep.check_leaks()  # before anything is written
    runs = make_plan(cfg)
    if cfg.model.name != "toy":  # an unloadable model fails once, before anything is written
        from rankscope.methods import resolve_model_path

        resolve_model_path(cfg.model)
    sweep.out.mkdir(parents=True, exist_ok=True)
    store = Store(sweep.out / STORE_NAME)
    outcome = SweepOutcome(sweep.out)
    try:
        guard_output_dir(store, cfg, runs, force)
        _write_meta(store, cfg)
        todo = []
        for run in runs:
            status = run_status(store, run, cfg)
            if status == "stale":
                _forget(store, sweep, run)
            (outcome.skipped if status == "done" else todo).append(run)
        _prepare_base(sweep, bool(todo))
        sweep.stages.start("train", len(todo))
        sweep.stages.start("evaluate", len(todo) * len(cfg.tasks.eval))
        prov = provenance()
        for run in todo:
            try:
                sweep.execute(store, run, prov)
                outcome.done.append(run.run_id)
            except (KeyboardInterrupt, ConfigError):
                raise
            except Exception as e:  # fault isolation: record, go on with the others
                msg = _failure_message(e, run)
                store.upsert_run(
                    **_run_row(run, cfg, sweep.run_dir(run)), status="failed", error=msg
                )
                write_atomic(sweep.run_dir(run) / "error.txt", traceback.format_exc())
                outcome.failed[run.run_id] = msg
                sweep.stages.note(f"[red]failed[/red] {run.run_id}: {msg}")
                if fail_fast:
                    break
        if cfg.analysis.enabled:
            analyze_sweep(sweep, store, runs)
        if report:
            sweep.stages.start("report", 1)
            outcome.report = write_sweep_report(sweep.out)
            sweep.stages.advance("report", 1)
    finally:
        store.close()
    return outcome


def analyze_sweep(sweep: Sweep, store: Store, runs: list[RunSpec]) -> None:
    """Spectral + attention analysis of every finished run (resumes per module / kind)."""
    from rankscope.analyze import analyze_run, fit_rows, probe_batches
    from rankscope.methods import load_base

    done = [r for r in runs if run_status(store, r, sweep.cfg) == "done"]
    sweep.stages.start("analyze", len(done))
    if not done:
        return
    base, tok, path = load_base(sweep.cfg.model)
    items = {t: sweep.items(t, "test") for t in sweep.cfg.tasks.eval}
    batches = probe_batches(sweep.cfg, items, tok)
    for run in done:
        try:
            analyze_run(
                run, sweep.run_dir(run), sweep.cfg, store, base, tok, str(path), batches, items
            )
        except (KeyboardInterrupt, ConfigError):
            raise
        except Exception as e:  # a failed analysis never costs the run's results
            msg = f"analysis failed: {_failure_message(e, run)}"
            store.update_run(run.run_id, error=msg)
            write_atomic(sweep.run_dir(run) / "analysis_error.txt", traceback.format_exc())
            sweep.stages.note(f"[yellow]{run.run_id}[/yellow]: {msg}")
        sweep.stages.advance("analyze", 1)
    fit_rows(store)


def analyze_only(cfg: SweepConfig, stages: Stages | None = None) -> Path:
    """`rankscope analyze`: the analyze stage alone, on a sweep's finished runs."""
    quiet_libraries()
    sweep = Sweep(cfg, stages)
    path = sweep.out / STORE_NAME
    if not path.exists():
        raise RankscopeError(f"{sweep.out}: no {STORE_NAME} here; run the sweep first")
    store = Store(path)
    try:
        analyze_sweep(sweep, store, make_plan(cfg))
    finally:
        store.close()
    return path


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


def _prepare_base(sweep: Sweep, needed: bool) -> None:
    """Build/cache the toy base model up front, with its own progress bar."""
    if not needed or sweep.cfg.model.name != "toy":
        return
    from rankscope.world.build import default_cache_dir, ensure_base_model, model_dir

    spec = sweep.ctx.world_spec
    cache = Path(sweep.cfg.model.cache_dir) if sweep.cfg.model.cache_dir else None
    if (model_dir(spec, cache or default_cache_dir()) / "world.json").exists():
        return
    sweep.stages.start("build toy base model", spec.pretrain_steps)
    ensure_base_model(
        spec, cache, on_step=lambda s, n, loss: sweep.stages.advance("build toy base model", 1)
    )


def _failure_message(e: BaseException, run: RunSpec) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "out of memory" in text.lower() or type(e).__name__ == "OutOfMemoryError":
        return (
            f"out of memory in {run.run_id}: lower train.batch_size and raise "
            "train.grad_accum to keep the effective batch, or shorten train.max_seq_len"
        )
    if isinstance(e, RankscopeError):
        return text
    return f"{type(e).__name__}: {text}"


def write_sweep_report(out_dir: Path) -> dict[str, Path]:
    from rankscope.report import write_report

    return write_report(Path(out_dir) / STORE_NAME, Path(out_dir) / "report")
