"""A run is the unit of work: config hash -> run directory -> DONE marker, written last.

A worker (`run_unit`, or `python -m rankscope.runner SWEEP_DIR RUN_ID`) writes only into its
run directory, every file atomically (temp file + rename), so any scheduler may kill, retry or
requeue it; a retry resumes where the files end: Trainer checkpoint, evaluated tasks, analysed
modules. The driver loads run directories into the one results store (`rankscope.store.ingest`),
so SQLite is never written from a worker on another machine and can be rebuilt from the run
directories. The layout of a run directory is `rankscope.rundir`'s. In an adaptive sweep
(`search: halving`) the driver may ask a run for part of its budget: the worker then trains
to that rung of the full run's schedule, scores the validation split and stops, keeping the
checkpoint a promotion resumes from (`rankscope.rungs`).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rankscope import replay
from rankscope.analyze import analyze_unit
from rankscope.config import SweepConfig, dump_yaml
from rankscope.errors import ConfigError, DataError, RankscopeError
from rankscope.evaluate import evaluate, mean_stderr
from rankscope.interrupts import check_stop, deferred_interrupts, interrupt_handler, kill_point
from rankscope.libs import quiet_libraries
from rankscope.methods import count_params, get, load_base, load_for_eval
from rankscope.plan import RunSpec, config_hash
from rankscope.provenance import provenance
from rankscope.rundir import Marker, RunDir
from rankscope.rungs import primary_value, rung_split, rung_step, rung_target
from rankscope.stages import Stages
from rankscope.sweep import Sweep, find_run, read_sweep_file, sweep_for, zero_shot
from rankscope.tasks import TASKS
from rankscope.tracking import TB_DIR
from rankscope.train import fit


def failure_message(e: BaseException, run_id: str) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "out of memory" in text.lower() or type(e).__name__ == "OutOfMemoryError":
        if isinstance(e, RankscopeError):
            return text
        return f"out of memory in {run_id} outside training: lower eval.batch_size"
    return text if isinstance(e, RankscopeError) else f"{type(e).__name__}: {text}"


# ------------------------------------------------------------------ the unit
@dataclass
class Unit:
    sweep: Sweep
    run: RunSpec
    stages: Stages
    notify: Callable[[], None]
    main: bool  # the process that writes files (rank 0 under `accelerate launch`)

    @property
    def cfg(self) -> SweepConfig:
        return self.sweep.cfg

    @property
    def rd(self) -> RunDir:
        return self.sweep.dir.run(self.run.run_id)

    @property
    def rdir(self) -> Path:
        return self.rd.path

    @property
    def hash(self) -> str:
        return config_hash(self.run, self.cfg)


def run_unit(sweep_dir: Path, run_id: str) -> None:
    """Worker entry point: execute one run of the sweep in `sweep_dir` completely."""
    cfg = read_sweep_file(Path(sweep_dir))
    execute_unit(sweep_for(cfg), run_id)


def execute_unit(
    sweep: Sweep,
    run_id: str,
    stages: Stages | None = None,
    notify: Callable[[], None] | None = None,
) -> None:
    """Train (resuming), evaluate the tasks not yet in eval/, analyse, then write DONE.

    `notify` is called after each unit of results is written (the local path ingests then).
    Returns at once when DONE holds the current config hash; raises after writing error.txt.
    """
    u = Unit(
        sweep,
        find_run(sweep.cfg, run_id),
        stages or Stages(),
        notify or (lambda: None),
        int(os.environ.get("RANK", "0")) == 0,
    )
    if u.rd.done_hash() == u.hash:
        return
    fraction = None if u.rd.is_trained() else rung_target(sweep.dir, sweep.cfg.search, run_id)
    rung = u.rd.rung() if fraction is not None else None
    if rung is not None and rung["fraction"] >= fraction - 1e-9:
        return  # already stopped at this rung (a rerun)
    if u.main:
        _start(u)
    try:
        trained = _train_stage(u, fraction)
        if not u.main or trained is STOPPED:
            return  # the other processes of a multi-process run only train; a rung is scored
        _eval_stage(u, trained)
        if u.cfg.analysis.enabled:
            run_analysis(u)
        u.rd.mark_done(u.hash)  # last: the run is complete
        u.notify()
    except (KeyboardInterrupt, ConfigError):
        raise
    except Exception as e:
        if u.main:
            u.rd.write_error(Marker.ERROR, failure_message(e, run_id), traceback.format_exc())
            u.notify()
        raise
    finally:
        if u.main:
            u.rd.release()


def _start(u: Unit) -> None:
    """Tidy what a killed worker left, forget work of another config, claim the dir."""
    if u.rd.start(u.hash):
        info = {"run": asdict(u.run), "config_hash": u.hash, "config": u.cfg.to_dict()}
        u.rd.write(Marker.CONFIG, dump_yaml({**info, "provenance": provenance()}))
    u.rd.claim()
    u.notify()


STOPPED = ("stopped at a rung",)
"""What `_train_stage` returns when it stopped at a rung of successive halving."""


def _progress(
    u: Unit, label: str, fraction: float | None = None, stopped: list | None = None
) -> Callable[[int, int], bool]:
    """Progress bar + a throttled progress.json that `rankscope status` reads. With a rung's
    `fraction` it returns True at the rung's step, which stops training there with a
    checkpoint (`train._callback`), and appends (step, max_steps) to `stopped`."""
    last = [0.0]

    def report(done: int, total: int) -> bool:
        u.stages.step(label, done, total)
        now = time.monotonic()
        if u.main and (now - last[0] > 1.0 or done in (1, total)):
            last[0] = now
            doc = {"stage": "train", "step": done, "total": total}
            u.rd.write(Marker.PROGRESS, json.dumps(doc))
        at = None if fraction is None else rung_step(fraction, total, u.cfg.train.logging_steps)
        if at is None or stopped is None or not at <= done < total:
            return False
        stopped.append((done, total))
        return True

    return report


def _score_rung(u: Unit, model: Any, tok: Any, fraction: float, step: int, total: int) -> None:
    """A rung's validation scores into eval/val@<step>/, then RUNG (written last)."""
    split, val = rung_split(step), {}
    for task in val_tasks(u):
        doc = {**_evaluate_task(u, model, tok, task, "val"), "split": split}
        u.rd.write(str(u.rd.eval_file(task, split).relative_to(u.rd.path)), json.dumps(doc))
        val[task] = primary_value(doc["metrics"])
    rung = {"fraction": fraction, "step": step, "max_steps": total, "val": val}
    u.rd.write(Marker.RUNG, json.dumps(rung))
    u.notify()


def _train_stage(u: Unit, fraction: float | None = None) -> Any:
    """Train (or resume) unless TRAINED exists; returns the trained (model, tok) if it ran,
    or STOPPED when it stopped at the rung `fraction` of its budget asked."""
    if u.rd.is_trained():
        u.rd.drop_train_state()  # left over when killed right after TRAINED
        u.stages.advance("train", 1)
        return None
    run, cfg, method = u.run, u.cfg, get(u.run.method)
    if not method.trains:
        model, tok, _ = load_base(cfg.model)
        rec = {"trainable_params": 0, "total_params": count_params(model)[1]}
    else:

        def prepare() -> Any:
            from transformers import set_seed

            set_seed(run.seed)  # the LoRA init must not depend on what ran before
            return method.prepare(load_base(cfg.model)[0], run, cfg)

        tok = load_base(cfg.model)[1]
        items, stopped = training_items(u.sweep, run), []
        progress = _progress(u, f"  {run.run_id}", fraction, stopped)
        work, tb = u.rd.trainer, u.rd / TB_DIR  # tb/ outlives the checkpoints in trainer/
        model, rec = fit(
            prepare, tok, items, cfg, run.run_id, run.lr, run.seed, work, progress, run, tb
        )
        fsdp_dir = rec.pop("fsdp_dir", None)
        if stopped and fraction is not None:  # the checkpoint stays: a promotion resumes it
            if u.main:
                _score_rung(u, model, tok, fraction, *stopped[-1])
            return STOPPED
        if not u.main:
            return None
        if fsdp_dir:  # gathered and saved by all ranks; evaluate what was saved, not shards
            method.adopt(Path(fsdp_dir), tok, u.rdir)
            rec["fsdp"] = True
        else:
            method.save(model, tok, u.rdir)
        log = rec.pop("log")
        u.rd.write(Marker.TRAIN_LOG, "".join(json.dumps(r) + "\n" for r in log))
        trainable, total = count_params(model)
        rec.update(trainable_params=trainable, total_params=total)
    u.rd.write(Marker.TRAINED, json.dumps(rec))  # marker written last
    u.rd.drop_train_state()
    u.notify()
    u.stages.advance("train", 1)
    return None if rec.get("fsdp") else (model, tok)


def training_items(sweep: Sweep, run: RunSpec) -> list:
    """The run's training items: its train task's, plus the general items its replay
    fraction mixes in (`rankscope.replay`)."""
    items = sweep.items(run.train_task, "train")
    if not run.replay:
        return items
    pool = replay.general_pool(sweep.cfg, zero_shot(sweep.ctx))
    return replay.mix(items, pool, run.replay, run.seed)


def val_tasks(u: Unit) -> list[str]:
    """The tasks whose validation split this run is scored on, where learning rates are
    chosen: a trained run's own train task; the base model's every train task."""
    tasks = u.cfg.tasks.train if u.run.train_task is None else [u.run.train_task]
    return [t for t in tasks if u.sweep.has_val(t)]


def _eval_stage(u: Unit, trained: tuple[Any, Any] | None) -> None:
    """Evaluate every (task, split) not yet in eval/ (one file each: metrics + predictions):
    every eval task on its test split, then the validation split of `val_tasks`."""
    model_tok = trained
    units = [(t, "test") for t in u.cfg.tasks.eval] + [(t, "val") for t in val_tasks(u)]
    for task, split in units:
        path = u.rd.eval_file(task, split)
        if not path.exists():
            if model_tok is None:
                model_tok = load_for_eval(u.run, u.rdir, u.cfg.model)
            doc = _evaluate_task(u, *model_tok, task, split)
            u.rd.write(str(path.relative_to(u.rd.path)), json.dumps(doc))
            u.notify()
        if split == "test":
            u.stages.advance("evaluate", 1)


def _evaluate_task(u: Unit, model: Any, tok: Any, task: str, split: str) -> dict[str, Any]:
    items, done = u.sweep.items(task, split), [0]
    label = f"  {u.run.run_id} on {task}" + (f" ({split})" if split != "test" else "")

    def progress(n: int) -> None:
        kill_point("eval")
        check_stop("during evaluation")  # Ctrl-C: stop after this batch
        done[0] += n
        u.stages.step(label, done[0], len(items))

    e = u.cfg.eval
    with deferred_interrupts():
        metrics, preds = evaluate(
            model,
            tok,
            TASKS[task],
            items,
            e.batch_size,
            e.max_new_tokens,
            progress,
            acc_norm=e.acc_norm,
            chat=u.cfg.data.chat_template,
        )
    if split == "test" and task == u.cfg.tasks.retention and get(u.run.method).trains:
        metrics.update(_drift_metric(u, model, tok, task, items))
    return {"task": task, "split": split, "metrics": metrics, "predictions": preds}


def _drift_metric(u: Unit, model: Any, tok: Any, task: str, items: list) -> dict[str, Any]:
    """`kl_base`: the mean per-token KL(base ‖ tuned) on the retention task's general text
    (`rankscope.drift`), with its standard error over texts; the continuous retention
    measure beside accuracy."""
    from rankscope.drift import kl_to_base, probe_texts

    n = u.cfg.eval.kl_texts
    spec = TASKS[task]
    texts = spec.probe_texts(u.sweep.ctx) if spec.probe_texts else [it.prompt for it in items]
    texts = probe_texts(texts, n)
    if not texts:
        return {}
    base = None if hasattr(model, "disable_adapter") else load_base(u.cfg.model)[0]
    kl = kl_to_base(model, tok, texts, base=base, batch_size=u.cfg.eval.batch_size)
    return {"kl_base": (*mean_stderr(kl), len(kl))}


def run_analysis(u: Unit) -> None:
    """Spectral + attention analysis into analysis/ (resumes per module); never fails the run."""
    try:
        analyze_unit(u.run, u.rdir, u.cfg, {t: u.sweep.items(t, "test") for t in u.cfg.tasks.eval})
        (u.rd / Marker.ANALYSIS_ERROR).unlink(missing_ok=True)
    except (KeyboardInterrupt, ConfigError):
        raise
    except Exception as e:  # a failed analysis never costs the run's results
        msg = f"analysis failed: {failure_message(e, u.run.run_id)}"
        u.rd.write_error(Marker.ANALYSIS_ERROR, msg, traceback.format_exc())
        u.stages.note(f"[yellow]{u.run.run_id}[/yellow]: {msg}")
    u.notify()
    u.stages.advance("analyze", 1)


def analyze_done_run(sweep: Sweep, run: RunSpec, stages: Stages) -> None:
    """`rankscope analyze` on a finished run: the analysis its analysis/ dir lacks."""
    run_analysis(Unit(sweep, run, stages, lambda: None, main=True))


# ------------------------------------------------------------------ command line
def main(argv: list[str] | None = None) -> int:
    """`python -m rankscope.runner SWEEP_DIR RUN_ID`: 0 done, 1 run failed, 2 bad input."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m rankscope.runner SWEEP_DIR RUN_ID", file=sys.stderr)
        return 2
    quiet_libraries()
    try:
        with interrupt_handler():
            run_unit(Path(args[0]), args[1])
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun to resume", file=sys.stderr)
        return 130
    except Exception as e:
        traceback.print_exc()
        print(f"error: {failure_message(e, args[1])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
