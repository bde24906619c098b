"""AdapterBank: one base model, LoRA adapters swapped in and out, the same predictions as
loading each run on its own copy of the base model (`load_for_eval`)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from sweep_configs import small_sweep

from rankscope.adapters import AdapterBank, adapter_dir, refusal
from rankscope.evaluate import evaluate
from rankscope.identity import RunSpec
from rankscope.methods import load_base, load_for_eval
from rankscope.sweep import Sweep
from rankscope.tasks import TASKS

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def write_run(base, out: Path, rank: int, seed: int, variant: str = "", **options) -> tuple:
    """A LoRA run dir whose adapter has random non-zero factors (no training)."""
    from peft import LoraConfig, get_peft_model

    run_id = f"t__{variant or 'lora'}-r{rank}-a{2 * rank}-lr1e-4__s{seed}"
    run = RunSpec(run_id, "lora", "t", seed, rank, 2.0 * rank, 1e-4, variant)
    conf = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS, **options)
    torch.manual_seed(seed)
    get_peft_model(copy.deepcopy(base), conf).save_pretrained(adapter_dir(out / run.run_id))
    return run, out / run.run_id


@pytest.fixture(scope="module")
def setup(tmp_path_factory, cache_dir, small_model_dir):
    out = tmp_path_factory.mktemp("adapters")
    cfg = small_sweep(out, cache_dir)
    base, _, _ = load_base(cfg.model)
    random = {"init_lora_weights": False}
    runs = [
        write_run(base, out, 4, 1, **random),
        write_run(base, out, 8, 2, **random),
        write_run(base, out, 8, 3, "rslora", use_rslora=True, **random),
    ]
    items = Sweep(cfg).items("toy-general", "test")[:12]
    return cfg, runs, items


def predict(model, tok, items) -> list:
    _, preds = evaluate(model, tok, TASKS["toy-general"], items, 8, 16)
    return [(p["pred"], p["detail"]["logprobs"]) for p in preds]


@pytest.mark.parametrize("keep", [1, 3])  # 3: every adapter stays loaded, one is active
def test_the_bank_predicts_what_each_run_loaded_alone_predicts(setup, keep):
    cfg, runs, items = setup
    alone = [predict(*load_for_eval(run, d, cfg.model), items) for run, d in runs]
    with AdapterBank(cfg.model, keep=keep) as bank:
        swapped = [predict(*bank.activate(run, d), items) for run, d in runs]
        assert len(bank.loaded) == keep  # keep=1: each swap deleted the one before
        assert list(bank.model.peft_config) == ["run1", "run2", "run3"][-keep:]
        assert not any(p.requires_grad for p in bank.model.parameters())  # frozen for eval
    assert swapped == alone  # bit for bit: letters and log-probabilities
    assert len({json.dumps(p) for p in alone}) == len(runs)  # the adapters really differ
    base_preds = predict(*load_base(cfg.model)[:2], items)
    assert all(p != base_preds for p in alone)


@pytest.mark.parametrize("keep, loads", [(1, 3), (2, 2)])
def test_swapping_back_gives_the_first_result_again(setup, keep, loads):
    cfg, runs, items = setup
    (a, da), (b, db), _ = runs
    with AdapterBank(cfg.model, keep=keep) as bank:
        first = predict(*bank.activate(a, da), items)
        other = predict(*bank.activate(b, db), items)
        again = predict(*bank.activate(a, da), items)
        assert bank.loads == loads  # keep=2 swaps back without reading the adapter again
        assert len(bank.loaded) == keep
    assert again == first != other


def test_dora_pissa_and_full_runs_are_refused_or_fall_back(setup, tmp_path):
    cfg, runs, items = setup
    base, _, _ = load_base(cfg.model)
    dora, ddir = write_run(base, tmp_path, 4, 5, "dora", use_dora=True, init_lora_weights=False)
    pissa = RunSpec("t__pissa-r4-a8-lr1e-4__s0", "lora", "t", 0, 4, 8.0, 1e-4, "pissa")
    full = RunSpec("t__full-lr1e-4__s0", "full", "t", 0, lr=1e-4)
    plain_name = RunSpec("t__lora-r4-a8-lr1e-4__s5", "lora", "t", 5, 4, 8.0, 1e-4)
    assert "DoRA" in refusal(dora, ddir)
    assert "PiSSA" in refusal(pissa, ddir)
    assert "no adapter" in refusal(full, tmp_path)
    assert "use_dora" in refusal(plain_name, ddir)  # the saved config is read too
    assert refusal(*runs[2]) is None  # rsLoRA is only a scale: it applies
    with AdapterBank(cfg.model) as bank:
        assert bank.activate(dora, ddir) is None and bank.model is None
        model, tok = bank.load(dora, ddir)  # falls back to load_for_eval
        assert model is not bank.model
        assert predict(model, tok, items) == predict(*load_for_eval(dora, ddir, cfg.model), items)
        base_run = RunSpec("base", "base", None, 0)
        assert bank.activate(base_run, tmp_path) is None
