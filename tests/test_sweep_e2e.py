"""A real tiny sweep, end to end: train, evaluate, store, reload, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import call_cli
from sweep_configs import small_sweep

from rankscope.pipeline import run_sweep, toy_world_warnings
from rankscope.rundir import STORE_NAME
from rankscope.store import Store


@pytest.fixture(scope="module")
def swept(tmp_path_factory, cache_dir, small_model_dir):
    out = tmp_path_factory.mktemp("sweep")
    cfg = small_sweep(out, cache_dir)
    outcome = run_sweep(cfg)
    return cfg, outcome


def _acc(store: Store, run_id: str, task: str, metric: str = "acc") -> float:
    rows = [
        m
        for m in store.metrics()
        if (m["run_id"], m["task"], m["split"], m["metric"]) == (run_id, task, "test", metric)
    ]
    assert len(rows) == 1
    return rows[0]["value"]


def test_every_run_done_and_evaluated_on_every_task(swept):
    cfg, outcome = swept
    assert not outcome.failed
    store = Store(cfg.out_dir / STORE_NAME)
    runs = {r["run_id"]: r for r in store.runs()}
    assert set(runs) == {
        "base",
        "toy-arith__full-lr3e-3__s0",
        "toy-arith__lora-r4-a8-lr3e-3__s0",
        "toy-arith__lora-r16-a32-lr3e-3__s0",
    }
    assert all(r["status"] == "done" for r in runs.values())
    for rid in runs:
        tasks = {m["task"] for m in store.metrics() if m["run_id"] == rid and m["split"] == "test"}
        assert tasks == set(cfg.tasks.eval)
        assert len(store.predictions(rid, "toy-med")) == 48  # per-item rows kept
        # validation (where lr is chosen): the run's own train task; base: every train task
        val = {m["task"] for m in store.metrics() if m["run_id"] == rid and m["split"] == "val"}
        assert val == {"toy-arith"}
        val_ids = {p["item_id"] for p in store.predictions(rid, "toy-arith", "val")}
        test_ids = {p["item_id"] for p in store.predictions(rid, "toy-arith")}
        assert val_ids and all(i.startswith("toy-arith/val/") for i in val_ids)
        assert not val_ids & test_ids
    # trainable parameters: LoRA r on 4 square d x d targets per layer = 2*r*d*4*layers
    d, layers = 64, 2
    assert runs["toy-arith__lora-r4-a8-lr3e-3__s0"]["trainable_params"] == 2 * 4 * d * 4 * layers
    assert runs["toy-arith__full-lr3e-3__s0"]["trainable_params"] == runs["base"]["total_params"]
    store.close()


def test_run_dir_layout_and_provenance(swept):
    cfg, _ = swept
    rdir = cfg.out_dir / "runs" / "toy-arith__lora-r4-a8-lr3e-3__s0"
    assert (rdir / "adapter" / "adapter_config.json").is_file()
    assert (rdir / "adapter" / "adapter_model.safetensors").is_file()
    assert (
        cfg.out_dir / "runs" / "toy-arith__full-lr3e-3__s0" / "model" / "model.safetensors"
    ).is_file()
    text = (rdir / "config.yaml").read_text()
    for needle in ("config_hash", "transformers", "peft", "hardware", "seed"):
        assert needle in text
    log = [json.loads(x) for x in (rdir / "train_log.jsonl").read_text().splitlines()]
    assert log and all("loss" in r for r in log)


def test_fine_tuning_learns_the_worked_answer_format(swept):
    cfg, _ = swept
    store = Store(cfg.out_dir / STORE_NAME)

    def formatted(run_id: str) -> float:
        preds = store.predictions(run_id, "toy-arith")
        return sum(p["pred"] != "None" for p in preds) / len(preds)

    # the base model never saw '#### N' answers; full SFT on toy-arith writes them: 100 % of
    # answers for the shipped small model on every floating-point path measured (README)
    assert formatted("base") == 0.0
    assert formatted("toy-arith__full-lr3e-3__s0") >= 0.5

    def em_strict(run_id: str) -> float:  # recomputed from the stored per-item rows
        preds = store.predictions(run_id, "toy-arith")
        return sum(p["pred"] == p["gold"] for p in preds) / len(preds)

    for run_id in ("base", "toy-arith__full-lr3e-3__s0"):
        stored = _acc(store, run_id, "toy-arith", "em_strict")
        assert stored == pytest.approx(em_strict(run_id), abs=1e-9)
    # and some of the formatted answers are right: full SFT gets 4 of the 40 test items
    # (0.10) on this machine; the floor is half of that, 2 items, for other floating-point
    # paths; the base model, which writes no '#### N', gets none
    assert em_strict("base") == 0.0
    assert em_strict("toy-arith__full-lr3e-3__s0") >= 0.05
    store.close()


def test_saved_adapter_reloads_and_reproduces_stored_accuracy(swept):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rankscope.evaluate import evaluate
    from rankscope.sweep import Sweep
    from rankscope.tasks import TASKS

    cfg, _ = swept
    run_id = "toy-arith__lora-r16-a32-lr3e-3__s0"  # evaluated on toy-med below
    from rankscope.methods import resolve_model_path

    base_path = resolve_model_path(cfg.model)
    base = AutoModelForCausalLM.from_pretrained(base_path)
    tok = AutoTokenizer.from_pretrained(base_path)
    model = PeftModel.from_pretrained(base, cfg.out_dir / "runs" / run_id / "adapter").eval()
    items = Sweep(cfg).items("toy-med", "test")
    metrics, preds = evaluate(model, tok, TASKS["toy-med"], items, 16, 8)
    store = Store(cfg.out_dir / STORE_NAME)
    assert metrics["acc"][0] == pytest.approx(_acc(store, run_id, "toy-med"), abs=1e-9)
    stored = {p["item_id"]: p["pred"] for p in store.predictions(run_id, "toy-med")}
    assert {p["item_id"]: p["pred"] for p in preds} == stored
    store.close()


def test_analysis_rows_for_every_run_and_module(swept):
    cfg, _ = swept
    store = Store(cfg.out_dir / STORE_NAME)
    spectral = store.analysis("spectral")
    layers, modules = 2, 4  # small world: 2 layers x q/k/v/o
    for rid, rank in (
        ("toy-arith__lora-r4-a8-lr3e-3__s0", 4),
        ("toy-arith__lora-r16-a32-lr3e-3__s0", 16),
    ):
        rows = [r for r in spectral if r["run_id"] == rid]
        assert len({r["module"] for r in rows}) == layers * modules
        # a rank-r update: at most r directions carry its energy
        assert all(r["value"] <= rank for r in rows if r["metric"] == "rank90")
        assert all(r["value"] > 0 for r in rows if r["metric"] == "fro")
    full = [
        r for r in spectral if r["run_id"] == "toy-arith__full-lr3e-3__s0" and r["metric"] == "fro"
    ]
    assert len(full) == layers * modules
    heads = [r for r in store.analysis("attention") if r["run_id"] == "base"]
    assert {r["metric"] for r in heads} == {"entropy", "sink_mass"}
    tuned = [r for r in store.analysis("attention") if r["run_id"] == "toy-arith__full-lr3e-3__s0"]
    assert any(r["metric"] == "js_div" and r["value"] > 0 for r in tuned)
    assert store.analysis("ablation") and store.analysis("cka")
    assert store.fits()
    store.close()


def test_toy_base_model_knows_its_general_facts_and_not_the_new_domains(swept):
    cfg, outcome = swept
    store = Store(cfg.out_dir / STORE_NAME)
    assert _acc(store, "base", "toy-general") >= 0.9  # what the toy world is built for
    store.close()
    assert outcome.warnings == []  # ...and within 3 standard errors of chance on the domains


def test_a_toy_base_model_under_its_promise_is_warned_about(tmp_path):
    cfg = small_sweep(tmp_path / "out", tmp_path / "cache", "model.world_seed=2")
    store = Store(tmp_path / STORE_NAME)
    store.save_eval("base", "toy-general", {"acc": (0.871, 0.02, 240)}, [])
    (msg,) = toy_world_warnings(cfg, store)
    assert "87.1 % on toy-general" in msg and "seed 2" in msg and "world_seed" in msg
    store.save_eval("base", "toy-general", {"acc": (0.95, 0.01, 240)}, [])
    assert toy_world_warnings(cfg, store) == []
    store.close()


def test_a_toy_base_model_that_already_solves_a_new_domain_is_warned_about(tmp_path):
    """Near chance = within 3 standard errors of the mean of 1 / options of the items."""
    cfg = small_sweep(tmp_path / "out", tmp_path / "cache", "model.world_seed=1")
    store = Store(tmp_path / STORE_NAME)
    items = [
        {
            "item_id": f"i{k}",
            "pred": "A",
            "gold": "A",
            "correct": 1,
            "detail": {"logprobs": [-1.0] * 5},
        }
        for k in range(160)
    ]
    store.save_eval("base", "toy-general", {"acc": (0.99, 0.01, 240)}, [])
    store.save_eval("base", "toy-legal", {"acc": (0.231, 0.033, 160)}, items)  # 0.9 SE
    assert toy_world_warnings(cfg, store) == []
    store.save_eval("base", "toy-legal", {"acc": (0.35, 0.038, 160)}, items)  # 3.9 SE
    (msg,) = toy_world_warnings(cfg, store)
    assert "35.0 % on toy-legal" in msg and "3.9 standard errors above chance (20.0 %)" in msg
    assert "seed 1" in msg
    store.close()


def test_chance_levels_read_from_the_stored_predictions(swept):
    cfg, _ = swept
    store = Store(cfg.out_dir / STORE_NAME)
    chance = store.chance_levels()
    store.close()
    expected = {"toy-mathmcq": 1 / 5, "toy-general": 1 / 4, "toy-med": 1 / 4, "toy-legal": 1 / 5}
    assert chance == pytest.approx({t: c for t, c in expected.items() if t in cfg.tasks.eval})
    assert "toy-arith" in cfg.tasks.eval and "toy-arith" not in chance  # generative


def test_report_written(swept):
    cfg, outcome = swept
    html = (cfg.out_dir / "report" / "report.html").read_text()
    assert outcome.report["html"].exists() and "data:image/png;base64" in html
    assert (
        "toy-arith__lora-r16-a32-lr3e-3__s0" in (cfg.out_dir / "report" / "report.md").read_text()
    )


def test_second_run_redoes_nothing(swept):
    cfg, _ = swept
    before = {
        p: p.stat().st_mtime_ns for p in (Path(cfg.out_dir) / "runs").rglob("*") if p.is_file()
    }
    rows = Store(cfg.out_dir / STORE_NAME).analysis()
    outcome = run_sweep(cfg, report=False)
    assert outcome.done == [] and len(outcome.skipped) == 4
    after = {p: p.stat().st_mtime_ns for p in before}
    assert before == after
    assert Store(cfg.out_dir / STORE_NAME).analysis() == rows


def test_changed_config_is_refused_then_forced(swept):
    from rankscope.errors import ConfigError

    cfg, _ = swept
    changed = small_sweep(
        cfg.out_dir,
        cfg.model.cache_dir,
        "train.epochs=1",
        "methods.lora.ranks=[4]",
        "methods.full.enabled=false",
    )
    with pytest.raises(ConfigError, match="made with a different config"):
        run_sweep(changed, report=False)


def test_run_dir_holds_every_unit_of_results(swept):
    cfg, _ = swept
    rdir = cfg.out_dir / "runs" / "toy-arith__lora-r4-a8-lr3e-3__s0"
    assert (cfg.out_dir / "sweep.yaml").is_file()  # what workers read
    assert sorted(p.stem for p in (rdir / "eval").glob("*.json")) == sorted(cfg.tasks.eval)
    assert len(list((rdir / "analysis").glob("spectral__*.json"))) == 2 * 4
    assert (rdir / "DONE").read_text() == yaml.safe_load((rdir / "config.yaml").read_text())[
        "config_hash"
    ]
    assert not (rdir / "trainer").exists() and not list(cfg.out_dir.rglob("*.tmp"))


def _oom_for_full_sft(monkeypatch) -> None:
    """Full SFT runs out of memory (injected); LoRA runs train for real."""
    import torch
    from transformers import Trainer

    real = Trainer.train

    def train(self, *a, **k):
        if not hasattr(self.model, "peft_config"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, *a, **k)

    monkeypatch.setattr(Trainer, "train", train)


FAULT_SETS = [
    "tasks.eval=[toy-arith, toy-general]",
    "tasks.max_train_items=16",
    "tasks.max_eval_items=8",
    "methods.base=false",
    "methods.lora.ranks=[4]",
    "analysis.enabled=false",
    "train.epochs=1",
    "train.oom_retry=false",
    "executor.cpu_workers=1",  # in-process: the monkeypatched failure must reach the run
]


@pytest.mark.parametrize("fail_fast", [False, True])
def test_failed_run_is_recorded_and_the_sweep_goes_on(
    tmp_path, cache_dir, small_model_dir, monkeypatch, capsys, fail_fast
):
    _oom_for_full_sft(monkeypatch)
    cfg = small_sweep(tmp_path / "out", cache_dir, *FAULT_SETS)
    base = [
        "model.world=small",
        "seeds=[0]",
        f"model.cache_dir={cache_dir}",
        "tasks.train=[toy-arith]",
        "methods.full.lr=3e-3",
        "methods.lora.lr=3e-3",
    ]
    sets = [x for s in [*FAULT_SETS, *base] for x in ("-s", s)]
    args = ["run", "-o", str(cfg.out_dir), *sets] + (["--fail-fast"] if fail_fast else [])
    code, err = call_cli(monkeypatch, capsys, *args, stream="err")
    assert code == 1
    full, lora = "toy-arith__full-lr3e-3__s0", "toy-arith__lora-r4-a8-lr3e-3__s0"
    assert "failed run" in err and f"out of memory in {full}" in err  # the summary table
    store = Store(cfg.out_dir / STORE_NAME)
    runs = {r["run_id"]: r for r in store.runs()}
    log = cfg.out_dir / "runs" / full / "error.txt"
    assert runs[full]["status"] == "failed" and f"(log: {log})" in runs[full]["error"]
    assert "gradient_checkpointing" in runs[full]["error"]
    assert "Traceback" in log.read_text()
    if fail_fast:  # stopped at the first failure: the LoRA run never started
        assert lora not in runs and not (cfg.out_dir / "runs" / lora).exists()
    else:
        assert runs[lora]["status"] == "done"
        tested = {
            m["task"] for m in store.metrics() if m["run_id"] == lora and m["split"] == "test"
        }
        assert tested == set(cfg.tasks.eval)
    store.close()


def test_lr_and_alpha_lists_give_their_figures_and_the_selection_table(
    tmp_path, cache_dir, small_model_dir
):
    """Issue 13's command, `--set methods.lora.lr=[...] --set methods.lora.alpha=[2r,16]`,
    on a real tiny sweep: one run per (alpha, lr, seed), reported at the lr best on
    validation, with the per-lr and per-alpha figures."""
    cfg = small_sweep(
        tmp_path / "out",
        cache_dir,
        "seeds=[0,1]",
        "tasks.eval=[toy-arith, toy-general]",
        "tasks.max_train_items=24",
        "tasks.max_eval_items=16",
        "methods.full.enabled=false",
        "methods.lora.ranks=[4]",
        "methods.lora.lr=[1e-3,3e-3]",
        "methods.lora.alpha=[2r,16]",
        "train.epochs=1",
        "analysis.enabled=false",
        "eval.max_new_tokens=16",
    )
    outcome = run_sweep(cfg)
    assert not outcome.failed and len(outcome.done) == 1 + 2 * 2 * 2
    assert "toy-arith__lora-r4-a16-lr1e-3__s1" in outcome.done
    report = cfg.out_dir / "report"
    assert (report / "figures" / "score_vs_lr.png").is_file()
    assert (report / "figures" / "score_vs_alpha.png").is_file()
    md = (report / "report.md").read_text()
    assert "### Learning rate selection" in md and "**How sure:** 2 seed(s)" in md
