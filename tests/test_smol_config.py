"""configs/smol-cpu.yaml and the benchmark subsets it reads (src/rankscope/data/smol): the
config states the design, its plan is the expected grid, every task loads from the shipped
files with the documented counts, and retention leaves out the training tasks' domains. No
model is loaded. That scripts/make_smol_data.py writes the same bytes again needs the full
sources, which the repository does not hold: it is the script's `--check` mode, a
maintainer's step, not a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from rankscope.config import load_config
from rankscope.plan import make_plan
from rankscope.sweep import Sweep
from rankscope.tasks import TASKS
from rankscope.tasks.mmlu import SUBJECTS, retention_subjects

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "smol-cpu.yaml"
DATA = ROOT / "src" / "rankscope" / "data" / "smol"

TRAIN_TASKS = ["medmcqa", "legalmcq"]
EVAL_TASKS = ["gsm8k", "mathqa", "mmlu", "medmcqa", "legalmcq"]
SHIPPED = {  # (task, split) -> items the loaders make of the shipped files (ORIGIN.md)
    ("gsm8k", "train"): 200,
    ("gsm8k", "test"): 100,
    ("mathqa", "train"): 200,
    ("mathqa", "test"): 100,
    ("medmcqa", "train"): 220,  # train side of the stable-hash carve, before validation
    ("medmcqa", "test"): 100,
    ("legalmcq", "train"): 220,
    ("legalmcq", "test"): 100,
    ("mmlu", "test"): 44 * 4,  # the retention subjects of a MedMCQA + CaseHOLD sweep
}


@pytest.fixture(scope="module")
def cfg():
    return load_config(CONFIG)


@pytest.fixture
def sweep(cfg, monkeypatch, tmp_path):
    """The sweep as `rankscope run configs/smol-cpu.yaml` builds it from the repository root
    (data.dir is relative to the working directory); nothing is written."""
    monkeypatch.chdir(ROOT)
    return Sweep(load_config(CONFIG, [f"output_dir={tmp_path / 'out'}"]))


def test_config_states_the_design(cfg):
    assert cfg.model.name == "smollm2-135m-instruct"
    d = cfg.data
    assert (d.source, d.dir, d.chat_template) == ("files", "src/rankscope/data/smol", True)
    assert (ROOT / d.dir).resolve() == DATA
    assert cfg.tasks.train == TRAIN_TASKS and cfg.tasks.eval == EVAL_TASKS
    assert cfg.tasks.retention == "mmlu" and cfg.seeds == [0]
    lora, full = cfg.methods.lora, cfg.methods.full
    assert lora.ranks == [8, 32, 128] and lora.alpha == "2r" and lora.lrs == [2e-4]
    assert lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert full.enabled and full.lrs == [5e-5] and cfg.methods.base
    t = cfg.train
    assert (t.epochs, t.batch_size, t.grad_accum, t.warmup_ratio) == (3, 8, 1, 0.1)
    assert (t.max_seq_len, t.save_steps) == (256, 0)
    assert cfg.eval.acc_norm and cfg.eval.batch_size == 16
    assert cfg.analysis.enabled and cfg.executor.cpu_workers == 1
    assert "time estimate" in CONFIG.read_text().lower()


def test_plan_is_base_plus_two_tasks_times_four_methods(cfg):
    ids = [r.run_id for r in make_plan(cfg)]
    methods = ["full-lr5e-5", "lora-r8-a16-lr2e-4", "lora-r32-a64-lr2e-4", "lora-r128-a256-lr2e-4"]
    assert sorted(ids) == sorted(["base"] + [f"{t}__{m}__s0" for t in TRAIN_TASKS for m in methods])


@pytest.mark.parametrize(("task", "split"), sorted(SHIPPED))
def test_tasks_load_the_shipped_subsets(sweep, task, split):
    items = TASKS[task].items(split, sweep.ctx)
    assert len(items) == SHIPPED[(task, split)]
    assert len({it.id for it in items}) == len(items)


def test_sweep_items_are_the_configured_caps(sweep, cfg):
    for task in EVAL_TASKS:
        assert len(sweep.items(task, "test")) == cfg.tasks.max_eval_items
    for task in TRAIN_TASKS:
        assert len(sweep.items(task, "train")) == cfg.tasks.max_train_items
        assert len(sweep.items(task, "val")) == cfg.tasks.max_eval_items
    # the whole carve (ORIGIN.md): train + validation = the 220 train-side rows, none dropped
    # by decontamination
    leaks = sweep.check_leaks()
    assert leaks.kept == {"medmcqa": 195, "legalmcq": 204}
    assert all(o.dropped == 0 for o in leaks.overlaps)


def test_retention_subjects_leave_out_the_training_domains(sweep):
    domain = {s for t in TRAIN_TASKS for s in TASKS[t].mmlu_domain}
    assert {"clinical_knowledge", "professional_law", "jurisprudence"} <= domain
    kept = retention_subjects(sweep.ctx)
    assert kept == sorted(set(SUBJECTS) - domain) and len(kept) == 44
    groups = {it.group for it in TASKS["mmlu"].items("test", sweep.ctx)}
    assert groups == set(kept)


def test_every_mmlu_subject_ships_dev_val_and_test_rows():
    for split in ("dev", "val", "test"):
        files = sorted((DATA / "mmlu" / split).glob("*.csv"))
        assert [p.name for p in files] == [f"{s}_{split}.csv" for s in sorted(SUBJECTS)]
    from rankscope.tasks.sources import read_csv_rows

    for s in SUBJECTS:
        for split, n in (("dev", 5), ("val", 2), ("test", 4)):
            assert len(read_csv_rows(DATA / "mmlu" / split / f"{s}_{split}.csv")) == n


def test_the_folder_is_small_and_says_where_it_comes_from():
    files = [p for p in DATA.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 3_000_000
    origin = (DATA / "ORIGIN.md").read_text()
    for needle in ("CC BY 4.0", "Zheng", "Chalkidis", "3101c7d", "eb2c562", "f8604a9", "b5a4469"):
        assert needle in origin
