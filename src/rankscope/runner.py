"""A run is the unit of work: config hash -> run directory -> DONE marker, written last.

A worker (`run_unit`, or `python -m rankscope.runner SWEEP_DIR RUN_ID`) writes only into its
run directory, every file atomically (temp file + rename), so any scheduler may kill, retry or
requeue it; a retry resumes where the files end: Trainer checkpoint, evaluated tasks, analysed
modules. The driver loads run directories into the one results store (`ingest_run`), so SQLite
is never written from a worker on another machine and can be rebuilt from the run directories.

runs/<run_id>/: config.yaml, RUNNING (pid while a worker runs it), progress.json,
trainer/checkpoint-N/, adapter/ | model/, train_log.jsonl, TRAINED, eval/<task>.json,
analysis/<kind>__<module>.json, analysis_error.txt, error.txt (a failure), DONE.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rankscope.config import SweepConfig, dump_yaml, load_config
from rankscope.errors import ConfigError, DataError, RankscopeError
from rankscope.pipeline import Stages, Sweep, sweep_for
from rankscope.plan import RunSpec, make_plan
from rankscope.progress import config_info, read_text, unit_state
from rankscope.store import Store
from rankscope.tasks import TASKS
from rankscope.train import check_stop, deferred_interrupts, interrupt_handler, kill_point

SWEEP_FILE = "sweep.yaml"
STORE_NAME = "results.sqlite"


# ------------------------------------------------------------------ files
def write_atomic(path: Path, text: str) -> None:
    """Write via a temp file and a rename: readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        kill_point("file")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _remove_leftovers(rdir: Path) -> None:
    """Temp files and dirs a killed worker left behind (nobody else writes this dir)."""
    for p in sorted(rdir.rglob("*.tmp"), reverse=True):
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


def write_sweep_file(cfg: SweepConfig, sweep_dir: Path) -> None:
    """The resolved sweep config, which workers read (written before any run starts)."""
    write_atomic(Path(sweep_dir) / SWEEP_FILE, dump_yaml(cfg.to_dict()))


def read_sweep_file(sweep_dir: Path) -> SweepConfig:
    path = Path(sweep_dir) / SWEEP_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: not found; is {sweep_dir} a sweep's output directory?")
    cfg = load_config(path)
    return dataclasses.replace(cfg, output_dir=str(sweep_dir))  # wherever it is mounted now


def find_run(cfg: SweepConfig, run_id: str) -> RunSpec:
    runs = {r.run_id: r for r in make_plan(cfg)}
    if run_id not in runs:
        raise ConfigError(f"run id {run_id!r} is not in the sweep's plan; known: {', '.join(runs)}")
    return runs[run_id]


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
    def rdir(self) -> Path:
        return self.sweep.run_dir(self.run)

    @property
    def hash(self) -> str:
        return self.run.config_hash(self.cfg)


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
    if read_text(u.rdir / "DONE") == u.hash:
        return
    if u.main:
        _start(u)
    try:
        trained = _train_stage(u)
        if not u.main:
            return  # the other processes of a multi-process run only train
        _eval_stage(u, trained)
        if u.cfg.analysis.enabled:
            run_analysis(u)
        write_atomic(u.rdir / "DONE", u.hash)  # last: the run is complete
        u.notify()
    except (KeyboardInterrupt, ConfigError):
        raise
    except Exception as e:
        if u.main:
            msg = failure_message(e, run_id)
            write_atomic(u.rdir / "error.txt", f"{msg}\n\n{traceback.format_exc()}")
            u.notify()
        raise
    finally:
        if u.main:
            (u.rdir / "RUNNING").unlink(missing_ok=True)


def _start(u: Unit) -> None:
    """Tidy what a killed worker left, forget work of another config, claim the dir."""
    rdir = u.rdir
    old = (config_info(rdir) or {}).get("config_hash")
    if old is not None and old != u.hash:
        shutil.rmtree(rdir)
    rdir.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(rdir)
    (rdir / "error.txt").unlink(missing_ok=True)  # a retry of a failed run
    if old != u.hash:
        from rankscope.provenance import provenance

        info = {"run": asdict(u.run), "config_hash": u.hash, "config": u.cfg.to_dict()}
        write_atomic(rdir / "config.yaml", dump_yaml({**info, "provenance": provenance()}))
    running = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    write_atomic(rdir / "RUNNING", json.dumps(running))
    u.notify()


def _progress(u: Unit, label: str) -> Callable[[int, int], None]:
    """Progress bar + a throttled progress.json that `rankscope status` reads."""
    last = [0.0]

    def report(done: int, total: int) -> None:
        u.stages.step(label, done, total)
        now = time.monotonic()
        if u.main and (now - last[0] > 1.0 or done in (1, total)):
            last[0] = now
            doc = {"stage": "train", "step": done, "total": total}
            write_atomic(u.rdir / "progress.json", json.dumps(doc))

    return report


def _train_stage(u: Unit) -> tuple[Any, Any] | None:
    """Train (or resume) unless TRAINED exists; returns the trained (model, tok) if it ran."""
    from rankscope.methods import METHODS, count_params, load_base

    if (u.rdir / "TRAINED").exists():
        _drop_train_state(u.rdir)  # left over when killed right after TRAINED
        u.stages.advance("train", 1)
        return None
    run, cfg = u.run, u.cfg
    if run.method == "base":
        model, tok, _ = load_base(cfg.model)
        rec = {"trainable_params": 0, "total_params": count_params(model)[1]}
    else:
        from rankscope.train import fit

        def prepare() -> Any:
            from transformers import set_seed

            set_seed(run.seed)  # the LoRA init must not depend on what ran before
            return METHODS[run.method].prepare(load_base(cfg.model)[0], run, cfg)

        tok = load_base(cfg.model)[1]
        items = u.sweep.items(run.train_task, "train")
        progress = _progress(u, f"  {run.run_id}")
        model, rec = fit(
            prepare, tok, items, cfg, run.run_id, run.lr, run.seed, u.rdir / "trainer", progress
        )
        fsdp_dir = rec.pop("fsdp_dir", None)
        if not u.main:
            return None
        if fsdp_dir:  # gathered and saved by all ranks; evaluate what was saved, not shards
            _adopt_saved(Path(fsdp_dir), tok, u.rdir, run.method)
            rec["fsdp"] = True
        else:
            METHODS[run.method].save(model, tok, u.rdir)
        log = rec.pop("log")
        write_atomic(u.rdir / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in log))
        trainable, total = count_params(model)
        rec.update(trainable_params=trainable, total_params=total)
    write_atomic(u.rdir / "TRAINED", json.dumps(rec))  # marker written last
    _drop_train_state(u.rdir)
    u.notify()
    u.stages.advance("train", 1)
    return None if rec.get("fsdp") else (model, tok)


def _adopt_saved(saved: Path, tok: Any, rdir: Path, method: str) -> None:
    """Move a model the Trainer saved (FSDP, all ranks) into place as adapter/ or model/."""
    target = rdir / ("adapter" if method == "lora" else "model")
    if method == "full":
        tok.save_pretrained(saved)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(saved, target)


def _drop_train_state(rdir: Path) -> None:
    """Checkpoints and live progress are no longer needed once TRAINED exists."""
    shutil.rmtree(rdir / "trainer", ignore_errors=True)
    (rdir / "progress.json").unlink(missing_ok=True)


def _eval_stage(u: Unit, trained: tuple[Any, Any] | None) -> None:
    """Evaluate every task not yet in eval/ (one file per task: metrics + predictions)."""
    from rankscope.methods import load_for_eval

    model_tok = trained
    for task in u.cfg.tasks.eval:
        path = u.rdir / "eval" / f"{task}.json"
        if not path.exists():
            if model_tok is None:
                model_tok = load_for_eval(u.run, u.rdir, u.cfg.model)
            doc = _evaluate_task(u, *model_tok, task)
            write_atomic(path, json.dumps(doc))
            u.notify()
        u.stages.advance("evaluate", 1)


def _evaluate_task(u: Unit, model: Any, tok: Any, task: str) -> dict[str, Any]:
    from rankscope.evaluate import evaluate

    items, label, done = u.sweep.items(task, "test"), f"  {u.run.run_id} on {task}", [0]

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
    return {"task": task, "metrics": metrics, "predictions": preds}


def run_analysis(u: Unit) -> None:
    """Spectral + attention analysis into analysis/ (resumes per module); never fails the run."""
    from rankscope.analyze import analyze_unit

    try:
        analyze_unit(u.run, u.rdir, u.cfg, {t: u.sweep.items(t, "test") for t in u.cfg.tasks.eval})
        (u.rdir / "analysis_error.txt").unlink(missing_ok=True)
    except (KeyboardInterrupt, ConfigError):
        raise
    except Exception as e:  # a failed analysis never costs the run's results
        msg = f"analysis failed: {failure_message(e, u.run.run_id)}"
        write_atomic(u.rdir / "analysis_error.txt", f"{msg}\n\n{traceback.format_exc()}")
        u.stages.note(f"[yellow]{u.run.run_id}[/yellow]: {msg}")
    u.notify()
    u.stages.advance("analyze", 1)


def analyze_done_run(sweep: Sweep, run: RunSpec, stages: Stages) -> None:
    """`rankscope analyze` on a finished run: the analysis its analysis/ dir lacks."""
    run_analysis(Unit(sweep, run, stages, lambda: None, main=True))


# ------------------------------------------------------------------ reading a run dir
def read_failure(rdir: Path) -> str | None:
    """The failure message of a failed run, with the path of its log."""
    state = unit_state(rdir)
    return state["error"] if state["status"] == "failed" else None


# ------------------------------------------------------------------ ingestion
def _sig(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _load_train(store: Store, run_id: str, path: Path) -> None:
    rec = json.loads(path.read_text())
    log_text = read_text(path.parent / "train_log.jsonl") or ""
    store.save_train_result(run_id, rec, [json.loads(x) for x in log_text.splitlines() if x])


def _load_eval(store: Store, run_id: str, path: Path) -> None:
    doc = json.loads(path.read_text())
    metrics = {k: tuple(v) for k, v in doc["metrics"].items()}
    store.save_eval(run_id, doc["task"], metrics, doc["predictions"])


def _load_analysis(store: Store, run_id: str, path: Path) -> None:
    store.save_analysis([tuple(r) for r in json.loads(path.read_text())])


def _units(rdir: Path) -> list[tuple[str, Path, Callable[[Store, str, Path], None]]]:
    units: list[tuple[str, Path, Callable[[Store, str, Path], None]]] = []
    if (rdir / "TRAINED").is_file():
        units.append(("TRAINED", rdir / "TRAINED", _load_train))
    units += [(f"eval/{p.name}", p, _load_eval) for p in sorted(rdir.glob("eval/*.json"))]
    units += [
        (f"analysis/{p.name}", p, _load_analysis) for p in sorted(rdir.glob("analysis/*.json"))
    ]
    return units


def ingest_run(store: Store, run_dir: Path) -> None:
    """Load the units of results a run dir holds into the store, in one transaction.

    Idempotent: unique keys replace rows, and a file already loaded (same size and mtime) is
    skipped, so calling it after every unit costs little.
    """
    run_dir = Path(run_dir)
    info = config_info(run_dir)
    if info is None:
        return
    spec, state = info["run"], unit_state(run_dir)
    failed = state["status"] == "failed"
    row = {
        **{
            k: spec[k]
            for k in ("run_id", "method", "train_task", "rank", "alpha", "lr", "seed", "variant")
        },
        "model": info["config"]["model"]["name"],
        "config_hash": info["config_hash"],
        "run_dir": str(run_dir),
        "log_path": str(run_dir / "error.txt") if failed else str(run_dir),
        "status": state["status"],
        "stage": state["stage"],
        "error": state["error"],
    }
    run_id = spec["run_id"]
    with store.transaction():
        store.upsert_run(**row)
        have = store.ingested(run_id)
        for unit, path, load in _units(run_dir):
            sig = _sig(path)
            if have.get(unit) != sig:
                load(store, run_id, path)
                store.mark_ingested(run_id, unit, sig)
        kill_point("store")  # a crash here must leave the store as it was


# ------------------------------------------------------------------ command line
def main(argv: list[str] | None = None) -> int:
    """`python -m rankscope.runner SWEEP_DIR RUN_ID`: 0 done, 1 run failed, 2 bad input."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m rankscope.runner SWEEP_DIR RUN_ID", file=sys.stderr)
        return 2
    from rankscope.pipeline import quiet_libraries

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
