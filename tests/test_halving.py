"""Successive halving (`search: halving`): the rung arithmetic on known validation scores,
and a tiny real halving sweep on the toy world, end to end: stopped arms marked in the run
dirs, the store, `rankscope status` and the report; the promoted runs are the grid's own
(same ids, config hashes and results); a grid sweep later finishes the stopped runs from their
rung checkpoints into exactly the grid's runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import call_cli, store_rows

from rankscope import halving
from rankscope.config import HalvingConfig, load_config
from rankscope.pipeline import run_sweep
from rankscope.plan import config_hash, make_plan
from rankscope.report import load_report_data
from rankscope.report.keys import MethodKey
from rankscope.report.significance import recommendations
from rankscope.rundir import STORE_NAME, Marker, SweepDir
from rankscope.rungs import rung_split, rung_step
from rankscope.store import Store
from rankscope.sweep import Sweep


# ------------------------------------------------------------------ the rung arithmetic
def test_rungs_follow_eta_and_the_number_of_arms():
    third, ninth = 1 / 3, 1 / 9
    assert HalvingConfig().rungs(12) == pytest.approx([ninth, third, 1.0])  # 12 -> 4 -> 1
    assert HalvingConfig().rungs(9) == pytest.approx([ninth, third, 1.0])
    assert HalvingConfig().rungs(8) == pytest.approx([third, 1.0])
    assert HalvingConfig().rungs(2) == [1.0]  # fewer arms than eta: nothing to halve
    assert HalvingConfig(eta=2, min_fraction=0.1).rungs(5) == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.0]
    )


def test_rung_steps_are_prefixes_aligned_to_the_loss_log():
    assert rung_step(1 / 9, 600, 5) == 70  # 66.7 -> 67 -> the next logged step
    assert rung_step(1 / 3, 12, 1) == 4
    assert rung_step(1 / 3, 12, 5) == 5
    assert rung_step(0.001, 10) == 1
    assert rung_step(0.99, 10, 5) == 10


def test_promote_keeps_the_best_floor_n_over_eta():
    scores = {"a": 0.50, "b": 0.70, "c": 0.60, "d": None, "e": 0.70, "f": 0.10}
    assert halving.promote(scores, 2) == ["b", "e"]  # 5 scored -> 2; the tie in plan order
    assert halving.promote(scores, 3) == ["b"]  # 5 // 3 = 1
    assert halving.promote(scores, 6) == ["b"]  # at least one
    assert halving.promote({"a": None}, 3) == []  # a failed arm never goes on
    twelve = {f"arm{i}": (i * 7 % 12) / 12 for i in range(12)}  # a permutation of 0..11/12
    assert halving.promote(twelve, 3) == ["arm5", "arm10", "arm3", "arm8"]  # 11, 10, 9, 8


def _write_rung(rd, task: str, step: int, total: int, fraction: float, acc: float) -> None:
    """A rung as a worker leaves it: eval/val@<step>/<task>.json, then RUNG."""
    doc = {"task": task, "split": rung_split(step), "metrics": {"acc": [acc, 0.0, 10]}}
    rd.path.joinpath("eval", rung_split(step)).mkdir(parents=True)
    rd.eval_file(task, rung_split(step)).write_text(json.dumps(doc))
    rung = {"fraction": fraction, "step": step, "max_steps": total, "val": {task: acc}}
    (rd / Marker.RUNG).write_text(json.dumps(rung))


def test_the_decision_is_the_mean_over_seeds_within_each_train_task(tmp_path):
    cfg = load_config(
        None,
        [
            f"output_dir={tmp_path}",
            "seeds=[0,1]",
            "tasks.train=[toy-med,toy-legal]",
            "methods.lora.ranks=[8,32]",
            "methods.lora.lr=[5e-4,1e-3]",
            "methods.full.lr=1e-3",
            "search=halving",
        ],
    )
    arms = halving.arms_of(make_plan(cfg))
    assert len(arms) == 10 and all(len(ids) == 2 for ids in arms.values())  # 5 arms x 2 tasks
    sweep = Sweep(cfg)
    # per arm (its seeds' accuracies): toy-med's best mean is r8 at 1e-3 (0.6), although r32
    # at 5e-4 has the best single seed (0.9); toy-legal's is full SFT (0.7)
    acc = {
        ("toy-med", "full-lr1e-3"): (0.2, 0.3),
        ("toy-med", "lora-r8-a16-lr5e-4"): (0.4, 0.4),
        ("toy-med", "lora-r8-a16-lr1e-3"): (0.5, 0.7),
        ("toy-med", "lora-r32-a64-lr5e-4"): (0.9, 0.1),
        ("toy-med", "lora-r32-a64-lr1e-3"): (0.3, 0.3),
        ("toy-legal", "full-lr1e-3"): (0.7, 0.7),
    }
    for arm, ids in arms.items():
        pair = acc.get((arm[0], halving.arm_name(arm)), (0.1, 0.2))
        for rid, a in zip(ids, pair, strict=True):
            _write_rung(sweep.dir.run(rid), arm[0], 60, 180, 1 / 3, a)
    out = halving.HalvingOutcome([1 / 3, 1.0])
    up = halving._decide(sweep, arms, list(arms), 1 / 3, out)  # 5 arms per task, eta 3 -> 1
    assert [(a[0], halving.arm_name(a)) for a in up] == [
        ("toy-med", "lora-r8-a16-lr1e-3"),
        ("toy-legal", "full-lr1e-3"),
    ]
    med = next(d for d in out.decisions if d["train_task"] == "toy-med")
    assert {r["arm"]: r["val"] for r in med["arms"]}["lora-r32-a64-lr5e-4"] == pytest.approx(0.5)


# ------------------------------------------------------------------ config errors
@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("search=halvng", "search: 'halvng' is not one of grid, halving"),
        ("halving.eta=1", "halving.eta: must be an integer >= 2"),
        ("halving.min_fraction=1.5", "halving.min_fraction: must be in (0, 1)"),
        ("halving.rate=3", "halving.rate: unknown key"),
    ],
)
def test_bad_halving_settings_exit_2_naming_the_field(
    tmp_path, monkeypatch, capsys, setting, field
):
    out = tmp_path / "out"
    code, err = call_cli(monkeypatch, capsys, "run", "-o", str(out), "-s", setting, stream="err")
    assert code == 2 and field in err, err
    assert not out.exists()


# ------------------------------------------------------------------ a real halving sweep
def _tiny(out: Path, cache_dir: Path, search: str):
    """Three arms (full SFT, LoRA r = 4 and 16) x 2 seeds on toy-med, 12 steps each: eta 3
    gives rungs at 1/3 (step 4) and the full budget, one arm promoted."""
    return load_config(
        None,
        [
            "name=halving",
            f"output_dir={out}",
            f"model.cache_dir={cache_dir}",
            "model.world=small",
            "seeds=[0,1]",
            "tasks.train=[toy-med]",
            "tasks.eval=[toy-general]",
            "tasks.max_train_items=48",
            "tasks.max_eval_items=24",
            "methods.full.lr=1e-3",
            "methods.lora.ranks=[4,16]",
            "methods.lora.lr=3e-3",
            "train.epochs=1",
            "train.batch_size=4",
            "train.grad_accum=1",
            "train.logging_steps=1",
            "train.save_steps=0",
            "eval.batch_size=8",
            "analysis.enabled=false",
            "executor.cpu_workers=1",
            f"search={search}",
        ],
    )


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, cache_dir, small_model_dir):
    root = tmp_path_factory.mktemp("halving")
    grid = _tiny(root / "grid", cache_dir, "grid")
    halved = _tiny(root / "halved", cache_dir, "halving")
    return grid, run_sweep(grid), halved, run_sweep(halved)


def _rows(cfg, run_ids) -> dict[str, list[tuple]]:
    """The store's rows of these runs, rung rows (split val@<step>) left out."""
    rows = store_rows(cfg.out_dir / STORE_NAME)
    keep = {
        t: [r for r in rows[t] if r[0] in run_ids and not str(r[2]).startswith("val@")]
        for t in ("metrics", "predictions", "train_log")
    }
    keep["runs"] = [r[:10] for r in rows["runs"] if r[0] in run_ids]  # spec, model, hash
    return keep


def test_one_arm_promoted_the_others_stopped_with_their_rung_in_the_store(sweeps):
    _, _, cfg, outcome = sweeps
    state = json.loads(SweepDir(cfg.out_dir).halving_file.read_text())
    assert state["rungs"] == pytest.approx([1 / 3, 1.0])
    (decision,) = state["decisions"]
    promoted = [a["arm"] for a in decision["arms"] if a["promoted"]]
    assert len(promoted) == 1 and len(decision["arms"]) == 3
    best = max(decision["arms"], key=lambda a: a["val"])["val"]
    assert next(a for a in decision["arms"] if a["promoted"])["val"] == best
    assert not outcome.failed and len(outcome.stopped) == 4
    assert set(outcome.done) == {f"toy-med__{promoted[0]}__s{s}" for s in (0, 1)} | {"base"}
    store = Store(cfg.out_dir / STORE_NAME)
    runs = {r["run_id"]: r for r in store.runs()}
    for rid in outcome.stopped:
        rd = SweepDir(cfg.out_dir).run(rid)
        assert runs[rid]["status"] == "stopped"
        assert runs[rid]["budget_fraction"] == pytest.approx(1 / 3)
        assert (rd.trainer / "checkpoint-4" / "COMPLETE").exists()  # what a promotion resumes
        assert not (rd / Marker.DONE).exists() and not (rd / Marker.TRAINED).exists()
        assert store.has_metrics(rid, "toy-med", "val@4")
        assert not store.has_metrics(rid, "toy-general", "test")
    stopped = {r["run_id"] for r in store.runs() if r["status"] == "stopped"}
    store.close()
    assert stopped == {rid for a in decision["arms"] if not a["promoted"] for rid in a["runs"]}


def test_status_and_report_show_the_stopped_runs(sweeps, monkeypatch, capsys):
    _, _, cfg, outcome = sweeps
    code, out = call_cli(monkeypatch, capsys, "status", str(cfg.out_dir))
    assert code == 0
    out = " ".join(out.replace("│", " ").split())  # the table's cells, one space apart
    for rid in outcome.stopped:
        assert f"{rid} stopped train stopped at step 4/12 (0.333 of budget)" in out
    assert "3 done, 4 stopped" in out
    report = (cfg.out_dir / "report" / "report.md").read_text()
    assert "## Failed runs" not in report and "Stopped by successive halving" in report
    data = load_report_data(cfg.out_dir / STORE_NAME)
    stopped = report[report.index("## Stopped early") :]
    rows = [ln for ln in stopped.splitlines() if ln.startswith("| toy-med |")]
    assert len(rows) == 2  # one per stopped configuration, its two seeds together
    state = json.loads(SweepDir(cfg.out_dir).halving_file.read_text())
    for arm in (a for a in state["decisions"][0]["arms"] if not a["promoted"]):
        row = next(r for r in rows if r.startswith(f"| toy-med | {_label(data, arm)} |"))
        assert row.endswith(f"| 2 | 0.333 | {100 * arm['val']:.1f} |")
    (rec,) = recommendations(data)  # stopped runs are no candidates: base and the promoted
    assert len(rec.others) == 1 and {rec.best.key.method, rec.others[0].key.method} >= {"base"}


def test_the_promoted_runs_are_the_grids_own(sweeps):
    grid, _, halved, outcome = sweeps
    promoted = {r for r in outcome.done if r != "base"}
    for run in make_plan(halved):
        assert config_hash(run, halved) == config_hash(run, grid)  # search is no identity
    assert _rows(halved, promoted) == _rows(grid, promoted)  # runs, metrics, items, loss log


def test_a_rerun_redoes_nothing_and_a_grid_sweep_finishes_the_stopped_runs(sweeps):
    grid, _, halved, outcome = sweeps
    again = run_sweep(halved, report=False)
    assert again.done == [] and again.stopped == outcome.stopped
    finished = run_sweep(_tiny(halved.out_dir, halved.model.cache_dir, "grid"), report=False)
    assert sorted(finished.done) == sorted(outcome.stopped)  # resumed from step 4
    every = {r.run_id for r in make_plan(grid)}
    assert _rows(halved, every) == _rows(grid, every)


def _label(data, arm: dict) -> str:
    """The report's label of a stopped arm (a decision's row), from its first run's typed
    columns."""
    row = next(r for r in data.runs if r["run_id"] == arm["runs"][0])
    return MethodKey.of(row).lr_label
