"""Adaptive sweep: the exhaustive grid vs successive halving (`search: halving`) on the toy world.

Both sweeps are configs/toy.yaml (3 seeds, LoRA r = 8, 32, 128 and full SFT, trained on
toy-med and toy-legal) with the learning rate as an axis (--lrs, for LoRA and full SFT
alike), each in its own output directory: <out>/grid and <out>/halving. Printed:

- training compute of each: optimizer steps summed over the trained runs (a stopped run
  counts the steps it trained, a promoted one its whole schedule once: it resumed), and the
  same weighted 6 per step for full SFT, 4 for LoRA (rankscope.estimate's FLOPs per token
  and parameter: the steps of one train task carry the same tokens); the ratios;
- per train task, whether the choices agree: halving's recommendation (best mean validation
  score over seeds of its finished arms) against the exhaustive sweep's (report/significance
  .recommendations: the best and the configurations statistically indistinguishable from it),
  and, where they differ, the paired test on the exhaustive sweep's validation items between
  the two (the same run ids exist in both sweeps);
- whether the promoted runs' stored results equal the exhaustive sweep's same runs.

--reuse keeps a finished <out>/grid (otherwise it is cleared and recomputed); either way
run dirs of --seed-from (default runs/toy) whose DONE holds this grid's config hash are
copied in first: the same runs, not recomputed.

    python benchmarks/adaptive.py --out runs/bench-adaptive --reuse
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from rankscope.config import load_config
from rankscope.halving import arm_name, arm_of, arms_of, halving_state
from rankscope.pipeline import run_sweep
from rankscope.plan import config_hash, make_plan
from rankscope.report import load_report_data
from rankscope.report.data import VAL
from rankscope.report.significance import paired, recommendations, units
from rankscope.rundir import STORE_NAME, SweepDir
from rankscope.sweep import Sweep


def configs(out: Path, lrs: str, eta: int, min_fraction: float | None, more: list[str]):
    sets = [f"methods.lora.lr=[{lrs}]", f"methods.full.lr=[{lrs}]", *more]
    grid = load_config(None, [*sets, f"output_dir={out / 'grid'}"])
    extra = [f"halving.eta={eta}", "search=halving", f"output_dir={out / 'halving'}"]
    if min_fraction is not None:
        extra.append(f"halving.min_fraction={min_fraction}")
    return grid, load_config(None, [*sets, *extra])


def seed_grid(cfg, sources: list[Path]) -> int:
    """Copy run dirs of `sources` that finished with this grid's config hash."""
    copied = 0
    for run in make_plan(cfg):
        target = SweepDir(cfg.out_dir).run(run.run_id).path
        if target.exists():
            continue
        for src in sources:
            rd = SweepDir(src).run(run.run_id)
            if rd.done_hash() == config_hash(run, cfg):
                shutil.copytree(rd.path, target)
                copied += 1
                break
    return copied


def max_steps(halved) -> dict[str, int]:
    """Optimizer steps of a full run per train task, as the Trainer counted them (RUNG)."""
    out: dict[str, int] = {}
    for run in make_plan(halved):
        rung = SweepDir(halved.out_dir).run(run.run_id).rung()
        if run.train_task and rung:
            out[run.train_task] = rung["max_steps"]
    return out


def compute(cfg, full_steps: dict[str, int]) -> tuple[int, int]:
    """(optimizer steps, steps weighted 6 full SFT / 4 LoRA) over the sweep's trained runs."""
    steps = weighted = 0
    for run in make_plan(cfg):
        if run.train_task is None:
            continue
        rd = SweepDir(cfg.out_dir).run(run.run_id)
        if rd.done_hash() is not None:
            n = full_steps[run.train_task]
        elif rd.rung() is not None:
            n = rd.rung()["step"]
        else:
            n = 0
        steps += n
        weighted += n * (6 if run.method == "full" else 4)
    return steps, weighted


def _name(cand) -> str:
    return cand.key.label + (f" lr={cand.lr:g}" if cand.lr is not None else "")


def agreement(grid, halved) -> list[str]:
    lines = []
    gdata = load_report_data(grid.out_dir / STORE_NAME)
    hdata = load_report_data(halved.out_dir / STORE_NAME)
    grecs = {r.train_task: r for r in recommendations(gdata)}
    gunits = units(gdata)
    for hrec in recommendations(hdata):
        task, grec = hrec.train_task, grecs.get(hrec.train_task)
        if grec is None:
            continue
        same = [c for c in grec.others if c.indistinguishable]
        pick = (hrec.best.key, hrec.best.lr)
        lines.append(
            f"{task}: exhaustive best {_name(grec.best)} (val {100 * grec.best.val.est:.1f} %); "
            f"indistinguishable: {', '.join(_name(c) for c in same) or 'none'}"
        )
        verdict = "SAME as exhaustive best"
        if pick != (grec.best.key, grec.best.lr):
            inside = any(pick == (c.key, c.lr) for c in same)
            verdict = "in the indistinguishable set" if inside else "DIFFERS"
            best_runs = next(r for (t, k), r in gunits.items() if t == task and k == grec.best.key)
            mine = [
                r["run_id"]
                for r in hdata.runs
                if r["status"] == "done" and r.get("train_task") == task
            ]
            c = paired(gdata, mine, best_runs, (task,), VAL) if mine else None
            if c is not None:
                verdict += (
                    f"; paired test on the exhaustive sweep's validation items: "
                    f"{100 * c.diff:+.1f} pp [{100 * c.lo:+.1f}, {100 * c.hi:+.1f}], p = {c.p:.3g}"
                )
        lines.append(
            f"  halving: {_name(hrec.best)} (val {100 * hrec.best.val.est:.1f} %) -> {verdict}"
        )
    return lines


def identical(grid, halved, run_ids: list[str]) -> bool:
    """The promoted runs' test and validation metrics and items equal the grid's."""

    def rows(cfg) -> list:
        q = (
            "SELECT run_id, task, split, item_id, pred, correct FROM predictions "
            "WHERE split IN ('test', 'val') AND run_id IN (%s) ORDER BY 1, 2, 3, 4"
        )
        with closing(sqlite3.connect(cfg.out_dir / STORE_NAME)) as c:
            return c.execute(q % ",".join("?" * len(run_ids)), run_ids).fetchall()

    return bool(run_ids) and rows(grid) == rows(halved)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-adaptive"))
    ap.add_argument("--reuse", action="store_true", help="keep a finished <out>/grid")
    ap.add_argument("--seed-from", type=Path, nargs="*", default=[Path("runs/toy")])
    ap.add_argument("--lrs", default="5e-4,1e-3", help="learning rates, LoRA and full SFT")
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--min-fraction", type=float, default=1 / 9)
    ap.add_argument("--set", action="append", default=[], help="more overrides, both sweeps")
    args = ap.parse_args()
    grid, halved = configs(args.out, args.lrs, args.eta, args.min_fraction, args.set)
    if not args.reuse:
        shutil.rmtree(grid.out_dir, ignore_errors=True)
    shutil.rmtree(halved.out_dir, ignore_errors=True)
    copied = seed_grid(grid, [p for p in args.seed_from if p.is_dir()])
    t0 = time.perf_counter()
    run_sweep(grid)
    t_grid = time.perf_counter() - t0
    t0 = time.perf_counter()
    outcome = run_sweep(halved)
    t_halving = time.perf_counter() - t0

    arms = arms_of(make_plan(grid))
    n_tasks = len(grid.tasks.train)
    state = halving_state(Sweep(halved))
    print(
        f"grid: configs/toy.yaml, lr [{args.lrs}] for LoRA (r = {grid.methods.lora.ranks}) and "
        f"full SFT, {n_tasks} train tasks, seeds {grid.seeds}: {len(arms)} arms "
        f"({len(arms) // n_tasks} per train task), {sum(map(len, arms.values()))} trained runs"
    )
    rungs = " / ".join(f"{f:.3g}" for f in state["rungs"])
    print(f"halving: eta {args.eta}, rungs at {rungs} of the training budget")
    for d in state.get("decisions", []):
        shown = ", ".join(
            f"{a['arm']} {100 * a['val']:.1f}{'*' if a['promoted'] else ''}"
            for a in sorted(d["arms"], key=lambda a: -(a["val"] or -1))
        )
        print(f"  rung {d['fraction']:.3g}, {d['train_task']} (val %, * promoted): {shown}")
    full_steps = max_steps(halved)
    g, h = compute(grid, full_steps), compute(halved, full_steps)
    print(f"full run: {json.dumps(full_steps)} optimizer steps per train task")
    print(
        f"training compute, optimizer steps summed over trained runs: exhaustive {g[0]}, "
        f"halving {h[0]}; {g[0] / h[0]:.2f}x less"
    )
    print(
        f"training compute, steps x 6 (full SFT) / 4 (LoRA): exhaustive {g[1]}, halving "
        f"{h[1]}; {g[1] / h[1]:.2f}x less"
    )
    print(
        f"wall time on this machine: exhaustive {t_grid / 60:.1f} min "
        f"({copied} of its runs copied from {', '.join(map(str, args.seed_from))}), "
        f"halving {t_halving / 60:.1f} min; {len(outcome.stopped)} runs stopped"
    )
    for line in agreement(grid, halved):
        print(line)
    plan = [r for r in make_plan(halved) if r.train_task is not None]
    done = [r for r in plan if SweepDir(halved.out_dir).run(r.run_id).done_hash()]
    promoted = [r.run_id for r in done]
    same = identical(grid, halved, promoted)
    names = ", ".join(sorted({arm_name(arm_of(r)) for r in done}))
    print(
        f"promoted runs ({len(promoted)}: {names})"
        f": test and validation predictions identical to the exhaustive sweep's: {same}"
    )


if __name__ == "__main__":
    main()
