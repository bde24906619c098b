"""Replay (`train.replay_fraction`): general items mixed into training, on the real toy world;
the run identity at 0 and above; the config's refusals; a tiny sweep's replay section."""

from __future__ import annotations

import dataclasses
import sqlite3

import numpy as np
import pytest
import scipy.stats
from helpers import call_cli

from rankscope import replay
from rankscope.config import load_config
from rankscope.decontam import contaminated, index_eval
from rankscope.errors import ConfigError, RankscopeError
from rankscope.plan import config_hash, identity, make_plan
from rankscope.report import load_report_data
from rankscope.report.blocks import FigureBlock, TableBlock
from rankscope.report.figures import render_figures
from rankscope.report.keys import MethodKey
from rankscope.report.replay import KINDS, replay_blocks, replay_rows, replay_tests
from rankscope.rundir import STORE_NAME
from rankscope.runner import training_items
from rankscope.store import Store
from rankscope.sweep import Sweep, zero_shot
from rankscope.tasks import TASKS

PINNED = {  # tests/test_plan.py's pinned hashes of the default grid: unchanged at replay 0
    ("base", "89844c2236a8e36d"),
    ("toy-med__full-lr5e-4__s0", "4ad941b35a1d08d7"),
    ("toy-med__lora-r8-a16-lr2e-3__s0", "c9a70dd8d8d26d71"),
}


@pytest.fixture(scope="module")
def small():
    """The small toy world with replay at 0 and 0.25; its sweep and its plan."""
    cfg = load_config(None, ["model.world=small", "train.replay_fraction=[0,0.25]"])
    return cfg, Sweep(cfg), make_plan(cfg)


def _run(plan, task: str, method: str, seed: int, fraction: float):
    return next(
        r
        for r in plan
        if (r.train_task, r.method, r.seed, r.replay) == (task, method, seed, fraction)
    )


def test_the_mix_holds_f_general_items_never_a_test_or_validation_question(small):
    cfg, sweep, plan = small
    for task in ("toy-med", "toy-legal"):
        run = _run(plan, task, "lora", 0, 0.25)
        own = sweep.items(task, "train")
        mixed = training_items(sweep, run)
        general = mixed[len(own) :]
        assert mixed[: len(own)] == own  # every task item, as without replay
        assert len(general) == round(len(own) * 0.25 / 0.75) == replay.general_count(len(own), 0.25)
        assert len(general) / len(mixed) == pytest.approx(0.25, abs=0.01)
        assert all(it.id.startswith("toy-general/train/") for it in general)
        ctx = zero_shot(sweep.ctx)
        held = [TASKS[t].items("test", ctx) for t in cfg.tasks.eval]
        held += [TASKS[t].items("val", ctx) for t in cfg.tasks.train]
        prompts = {it.prompt for items in held for it in items}
        ids = {it.id for items in held for it in items}
        assert not {it.prompt for it in general} & prompts
        assert not {it.id for it in general} & ids
        for items in held:  # not even a 13-gram or a whole question in common
            assert not contaminated(general, index_eval(items))
    no_replay = _run(plan, "toy-med", "lora", 0, 0.0)
    assert training_items(sweep, no_replay) == sweep.items("toy-med", "train")


def test_the_general_items_are_drawn_from_the_run_seed(small):
    cfg, sweep, plan = small
    s0 = [it.id for it in training_items(sweep, _run(plan, "toy-med", "lora", 0, 0.25))]
    assert s0 == [it.id for it in training_items(sweep, _run(plan, "toy-med", "full", 0, 0.25))]
    again = Sweep(cfg)  # another process draws the same
    assert s0 == [it.id for it in training_items(again, _run(plan, "toy-med", "lora", 0, 0.25))]
    other = load_config(None, ["model.world=small", "train.replay_fraction=0.25", "seeds=[1]"])
    s1 = training_items(Sweep(other), _run(make_plan(other), "toy-med", "lora", 1, 0.25))
    assert len(s1) == len(s0) and [it.id for it in s1] != s0


def test_ids_and_hashes_are_unchanged_at_0_and_distinct_at_a_fraction():
    plain = load_config()
    zero = load_config(None, ["train.replay_fraction=0"])
    both = load_config(None, ["train.replay_fraction=[0,0.25]"])
    for cfg in (plain, zero):
        assert {(r.run_id, config_hash(r, cfg)) for r in make_plan(cfg)[:3]} == PINNED
    runs = make_plan(both)
    assert {(r.run_id, config_hash(r, both)) for r in runs if not r.replay} >= PINNED
    assert len(runs) == 2 * len(make_plan(plain)) - 1  # every trained run twice, base once
    lora = _run(runs, "toy-med", "lora", 0, 0.25)
    full = _run(runs, "toy-med", "full", 0, 0.25)
    assert (lora.run_id, full.run_id) == (
        "toy-med__lora-r8-a16-lr2e-3-rp25__s0",
        "toy-med__full-lr5e-4-rp25__s0",
    )
    hashes = {config_hash(r, both) for r in runs}
    assert len(hashes) == len(runs)
    assert identity(lora, both)["spec"]["replay"] == 0.25
    assert identity(lora, both)["train_data"]["replay"]["from"] == "toy-general"
    assert "replay" not in identity(_run(runs, "toy-med", "lora", 0, 0.0), both)["spec"]
    tag = load_config(None, ["train.replay_fraction=0.125", "tasks.train=[toy-med]"])
    assert make_plan(tag)[1].run_id == "toy-med__full-lr5e-4-rp12.5__s0"


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("1", "must be in [0, 1), got 1"),
        ("-0.1", "must be in [0, 1), got -0.1"),
        ("[0.25,0.25]", "a fraction is listed twice"),
        ("[]", "give at least one fraction"),
        ("lots", "expected float or list"),
    ],
)
def test_the_config_refuses_bad_fractions(value, said):
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"train.replay_fraction={value}"])
    assert "train.replay_fraction" in str(e.value) and said in str(e.value)
    assert e.value.exit_code == 2


def test_replay_without_a_general_set_is_refused_by_name(monkeypatch, capsys, tmp_path):
    sets = ["tasks.train=[toy-legal]", "tasks.eval=[toy-med, toy-legal]", "tasks.retention=toy-med"]
    cfg = load_config(None, [*sets, "train.replay_fraction=0.25"])
    with pytest.raises(RankscopeError, match=r"train\.replay_fraction: no general-domain set"):
        make_plan(cfg)
    make_plan(load_config(None, sets))  # no replay: nothing to refuse
    args = [f"--set={s}" for s in [*sets, "train.replay_fraction=0.25"]]
    code, text = call_cli(monkeypatch, capsys, "plan", "-o", str(tmp_path / "x"), *args)
    assert code == 2 and "train.replay_fraction" in text and "Traceback" not in text
    code, text = call_cli(monkeypatch, capsys, "plan", "--set", "train.replay_fraction=1")
    assert code == 2 and "train.replay_fraction: must be in [0, 1)" in text
    assert "Traceback" not in text


def test_an_old_store_gains_the_replay_column_as_0(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, model TEXT NOT NULL, train_task TEXT,"
        " method TEXT NOT NULL, rank INTEGER, alpha REAL, lr REAL, seed INTEGER,"
        " variant TEXT NOT NULL DEFAULT '', config_hash TEXT NOT NULL, status TEXT NOT NULL,"
        " stage TEXT, error TEXT, log_path TEXT, trainable_params INTEGER, total_params"
        " INTEGER, train_seconds REAL, tokens_per_second REAL, peak_memory_mb REAL,"
        " final_train_loss REAL, run_dir TEXT, updated_at REAL)"
    )
    conn.execute(
        "INSERT INTO runs (run_id, model, method, config_hash, status) VALUES"
        " ('toy-med__full-lr1e-3__s0', 'toy', 'full', 'h', 'done')"
    )
    conn.commit()
    conn.close()
    (row,) = Store(path).runs()
    assert row["replay"] == 0 and MethodKey.of(row) == MethodKey("full")


def test_method_keys_keep_replay_fractions_apart():
    a = MethodKey.of({"method": "lora", "rank": 8, "alpha": 16.0, "lr": 1e-3})
    b = MethodKey.of({"method": "lora", "rank": 8, "alpha": 16.0, "lr": 1e-3, "replay": 0.25})
    assert a != b and a.replay == 0.0 and b.label == "lora r=8 replay 25%"
    assert a.label == "lora r=8" and sorted([b, a], key=lambda k: k.sort_key) == [a, b]


@pytest.fixture(scope="module")
def swept(tmp_path_factory, cache_dir, small_model_dir):
    """A tiny sweep with replay: base + LoRA r = 2 and 4 at replay 0 and 0.25, two seeds."""
    from rankscope.pipeline import run_sweep

    out = tmp_path_factory.mktemp("replay")
    cfg = load_config(
        None,
        [
            "name=replay",
            f"output_dir={out}",
            f"model.cache_dir={cache_dir}",
            "model.world=small",
            "seeds=[0,1]",
            "tasks.train=[toy-med]",
            "tasks.eval=[toy-med, toy-general, toy-legal]",
            "tasks.max_train_items=24",
            "tasks.max_eval_items=16",
            "methods.full.enabled=false",
            "methods.lora.ranks=[2,4]",
            "methods.lora.lr=3e-2",  # with 12 steps (16 with replay): moves the scores
            "train.epochs=1",
            "train.grad_accum=1",
            "train.replay_fraction=[0,0.25]",
            "eval.kl_texts=0",
            "analysis.enabled=false",
            "executor.cpu_workers=1",
        ],
    )
    outcome = run_sweep(cfg)
    assert not outcome.failed
    return cfg, out


def test_a_tiny_sweep_reports_replay_with_intervals(swept, tmp_path):
    cfg, out = swept
    store = Store(out / STORE_NAME)
    fractions = {r["run_id"]: r["replay"] for r in store.runs()}
    assert fractions["toy-med__lora-r4-a8-lr3e-2-rp25__s1"] == 0.25
    assert fractions["toy-med__lora-r4-a8-lr3e-2__s1"] == 0.0 and len(fractions) == 9
    data = load_report_data(out / STORE_NAME)
    rows = replay_rows(data)
    assert [(r.key.rank, r.key.replay, len(r.run_ids)) for r in rows] == [
        (2, 0.0, 2),
        (2, 0.25, 2),
        (4, 0.0, 2),
        (4, 0.25, 2),
    ]
    assert all(
        r.change[k] is not None and r.change[k].lo is not None for r in rows for k in r.change
    )
    refs = {(t.key.rank, t.reference.rank, t.reference.replay, t.kind) for t in replay_tests(data)}
    assert (4, 2, 0.0, "retention") in refs and (4, 4, 0.0, "cross-domain") in refs
    assert (2, 4, 0.0, "retention") not in refs  # only lower ranks are the cheap alternative
    report = (out / "report" / "report.md").read_text()  # the sweep wrote its report
    assert "## Replay: negative-transfer mitigation" in report
    assert "![Replay vs lower rank](figures/replay.png)" in report
    figs = render_figures(data, tmp_path / "figures")
    blocks = replay_blocks(data, figs)
    tables = [b.table for b in blocks if isinstance(b, TableBlock)]
    assert len(tables) == 2 and (tmp_path / "figures" / "replay.png").is_file()
    assert any(isinstance(b, FigureBlock) for b in blocks)
    main = tables[0]
    assert [row[1:3] for row in main.rows] == [
        ["lora r=2", "0%"],
        ["lora r=2", "25%"],
        ["lora r=4", "0%"],
        ["lora r=4", "25%"],
    ]
    assert all("±" in cell for row in main.rows for cell in row[4:7])  # 95% CI over seeds
    assert "[" in main.rows[1][7] and "p" in main.rows[1][7]  # paired vs no replay
    # the changes, recomputed from the store: per seed, run − base on each kind's tasks
    # (primary metric `acc`, test split; cross-domain: the mean over its tasks), then the
    # mean over the seeds and its 95% t half-width, in pp, as the table shows them
    acc = {
        (m["run_id"], m["task"]): m["value"]
        for m in store.metrics()
        if m["split"] == "test" and m["metric"] == "acc"
    }
    kinds = {"in-domain": ["toy-med"], "cross-domain": ["toy-legal"], "retention": ["toy-general"]}
    assert cfg.tasks.retention == "toy-general"
    moved = 0
    for row, cells in zip(rows, main.rows, strict=True):
        for kind, tasks in kinds.items():
            per_seed = [
                sum(acc[(rid, t)] - acc[("base", t)] for t in tasks) / len(tasks)
                for rid in row.run_ids
            ]
            mean = 100 * float(np.mean(per_seed))
            half = 100 * scipy.stats.t.ppf(0.975, 1) * float(np.std(per_seed, ddof=1)) / 2**0.5
            shown_mean, shown_half = cells[4 + KINDS.index(kind)].split(" ± ")
            assert float(shown_mean) == pytest.approx(mean, abs=0.05 + 1e-9), (cells, kind)
            assert float(shown_half) == pytest.approx(half, abs=0.05 + 1e-9), (cells, kind)
            assert f"| {cells[4 + KINDS.index(kind)]} |" in report  # the written report
            moved += mean != 0.0
    assert moved >= 1  # not all zero: training moved the scores (5 of the 12 cells here)
    no_replay = dataclasses.replace(data, runs=[r for r in data.runs if not r["replay"]])
    assert replay_blocks(no_replay) == []  # one fraction: no section


@pytest.mark.filterwarnings("ignore:.*MMLU subjects found")
def test_mmlu_replays_the_val_rows_of_the_evaluated_subjects_only():
    """Real benchmarks (the fixture files): MMLU's general set is the val rows of the subjects
    it evaluates, never a subject a training task's domain covers."""
    from pathlib import Path

    from rankscope.tasks import mmlu

    data = Path(__file__).parent / "fixtures" / "data"
    cfg = load_config(
        None,
        [
            "model.name=tiny-real",
            "data.source=files",
            f"data.dir={data}",
            "tasks.train=[medmcqa]",
            "tasks.eval=[medmcqa, mmlu]",
            "tasks.retention=mmlu",
            "train.replay_fraction=0.5",
        ],
    )
    ctx = zero_shot(Sweep(cfg).ctx)
    pool = replay.general_pool(cfg, ctx)
    subjects = {it.id.split("/")[1] for it in pool}
    assert pool and all(it.id.split("/")[2] == "val" for it in pool)
    assert subjects <= set(mmlu.retention_subjects(ctx))
    assert "college_medicine" not in subjects  # MedMCQA's domain: not general for this sweep
