"""`rankscope probe`: the rank predicted before the sweep, on the real toy world."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import call_cli
from sweep_configs import one_lora_run

from rankscope.config import load_config
from rankscope.probe import (
    ProbeOptions,
    ProbeRow,
    energy_rank,
    gradient_prediction,
    probe_batches,
    run_probe,
    stable_rank,
    to_grid,
)
from rankscope.probe_core import Prediction, target_names
from rankscope.probe_validate import Truth, log2_error, scores

STEPS = 2


def test_the_energy_rank_of_a_known_low_rank_update_is_recovered_exactly():
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(64, 64)))
    v, _ = np.linalg.qr(rng.normal(size=(48, 48)))
    sigma = np.array([4.0, 3.0, 2.0, 1.0, 1.0])  # energy 16, 9, 4, 1, 1: total 31
    update = u[:, :5] @ np.diag(sigma) @ v[:, :5].T  # exactly rank 5
    sv = np.linalg.svd(update, compute_uv=False)
    assert energy_rank(sv, 1.0) == 5  # all of the energy: the exact rank, not 48
    assert energy_rank(sv, 0.9) == 3  # 29/31 = 93.5 % >= 90 % > 25/31
    assert energy_rank(sv, 0.5) == 1  # 16/31 = 51.6 %
    assert stable_rank(sv) == pytest.approx(31 / 16)
    assert energy_rank(np.zeros(4)) == 0 and stable_rank(np.zeros(4)) == 0


def test_a_rank_is_rounded_up_to_the_grid():
    assert [to_grid(x, [8, 32, 128], True) for x in (1, 8, 8.5, 33, 128, 129)] == [
        "8", "8", "32", "128", "128", "full"
    ]  # fmt: skip
    assert to_grid(500, [8, 32], False) == "32"  # no full SFT in the config: the top rank


@pytest.fixture(scope="module")
def toy_cfg():
    return load_config(None, ["seeds=[0]"])


@pytest.fixture(scope="module")
def probed(toy_cfg):
    return run_probe(toy_cfg, ProbeOptions(steps=STEPS))


def test_the_probe_gives_a_grid_rank_for_every_train_task(probed, toy_cfg):
    assert [(r.task, r.seed) for r in probed] == [("toy-med", 0), ("toy-legal", 0)]
    for row in probed:
        p = row.predictions["probe"]
        assert p.choice in ("8", "32", "128", "full")
        assert len(p.modules) == 16  # q/k/v/o_proj of the toy model's 4 layers
        assert p.steps == STEPS and p.tokens > 0 and p.seconds > 0


def test_the_probe_is_deterministic_per_seed(probed):
    med = load_config(None, ["seeds=[0,1]", "tasks.train=[toy-med]"])
    again, other = run_probe(med, ProbeOptions(steps=STEPS))
    assert again.predictions["probe"].modules == probed[0].predictions["probe"].modules
    assert other.predictions["probe"].modules != again.predictions["probe"].modules  # new batches


def test_the_probe_keeps_no_optimizer_state_and_moves_no_weight(toy_cfg, monkeypatch):
    import torch

    from rankscope.models import load_base

    def refuse(*a, **k):
        raise AssertionError("the probe created an optimizer")

    monkeypatch.setattr(torch.optim.Optimizer, "__init__", refuse)
    model, tok, _ = load_base(toy_cfg.model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pred = gradient_prediction(model, probe_batches(toy_cfg, "toy-med", 0, 1, tok), toy_cfg, 0.9)
    assert pred.choice is not None
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
        assert p.grad is None, n  # no gradient left behind either


def test_the_prediction_is_the_energy_rank_of_the_summed_gradients(toy_cfg):
    """Against a reference accumulated by hand: each batch's gradient from its own backward,
    summed in float64, its singular values from numpy; then the median rank on the grid."""
    from rankscope.models import load_base

    model, tok, _ = load_base(toy_cfg.model)
    batches = probe_batches(toy_cfg, "toy-med", 0, 3, tok)
    model.train()  # as the probe runs it
    names = target_names(model, toy_cfg)
    ref = {n: np.zeros(dict(model.named_modules())[n].weight.shape) for n in names}
    for batch in batches:
        model.zero_grad()
        model(**batch).loss.backward()
        for n in names:
            ref[n] += dict(model.named_modules())[n].weight.grad.double().numpy()
    model.zero_grad()
    pred = gradient_prediction(model, batches, toy_cfg, 0.9)
    assert sorted(pred.modules) == sorted(names) and len(names) == 16
    ranks = {}
    for n in names:
        sv = np.linalg.svd(ref[n], compute_uv=False)
        ranks[n] = energy_rank(sv, 0.9)
        assert pred.modules[n]["rank"] == ranks[n], n
        assert pred.modules[n]["stable_rank"] == pytest.approx(stable_rank(sv), rel=1e-6), n
    assert len(set(ranks.values())) > 1  # the modules differ: the median means something
    assert pred.median_rank == float(np.median(list(ranks.values())))
    assert pred.choice == to_grid(pred.median_rank, [8, 32, 128], True)


def test_validation_scores_hits_and_log2_errors_on_a_grid():
    def row(task: str, choice: str | None) -> ProbeRow:
        pred = Prediction("probe", choice, None, None, 2.0, 100, 1)
        return ProbeRow(task, 0, {"probe": pred})

    truth = {
        "med": Truth("med", "32", frozenset({"32", "128"})),
        "legal": Truth("legal", "full", frozenset({"full"})),
        "arith": Truth("arith", "base", frozenset({"base", "8"})),
    }
    rows = [row("med", "8"), row("med", "128"), row("legal", "32"), row("arith", "8")]
    got = scores(rows, truth, full_rank=128)["probe"]
    # hits: med 128 (tied), arith 8 (tied); errors: log2 8/32 = -2, 128/32 = +2, 32/128 = -2;
    # none against "base" (no rank to compare with)
    assert got["hits"] == 2 and got["n"] == 4
    assert got["mean_abs_log2_error"] == pytest.approx(2.0)
    assert log2_error("8", "128", 128) == pytest.approx(-4.0)
    assert log2_error("full", "32", 256) == pytest.approx(3.0)
    assert log2_error(None, "32", 128) is None and log2_error("8", "base", 128) is None
    assert got["seconds"] == 2.0 and got["tokens"] == 100


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "0"], "--steps: must be >= 1"),
        (["--energy", "1.5"], "--energy: must be in (0, 1]"),
        (["--compare", "eva,lora-ga"], "--compare: 'lora-ga' is not one of eva, adalora"),
        (["--validate", "no/such/sweep"], "--validate: no/such/sweep has no results.sqlite"),
        (["--set", "methods.lora.enabled=false"], "methods.lora.enabled: false"),
    ],
)
def test_bad_input_exits_2_with_one_message(monkeypatch, capsys, args, message):
    code, text = call_cli(monkeypatch, capsys, "probe", *args)
    assert code == 2
    assert message in text and "Traceback" not in text


def test_validate_against_a_finished_sweep(tmp_path, cache_dir, monkeypatch, capsys):
    sets = one_lora_run("probed", tmp_path / "sweep", cache_dir)
    argv = [x for s in sets for x in ("--set", s)]
    code, text = call_cli(monkeypatch, capsys, "run", *argv)
    assert code == 0, text
    out = tmp_path / "probe.json"
    code, text = call_cli(
        monkeypatch, capsys, "probe", *argv, "--steps", "3", "--compare", "adalora",
        "--validate", str(tmp_path / "sweep"), "--json", str(out),
    )  # fmt: skip
    assert code == 0, text
    doc = json.loads(out.read_text())
    # the sweep's only configuration (LoRA r=4) is its recommendation; the grid is [4]
    assert doc["validation"]["truth"] == {"toy-arith": {"best": "4", "indistinguishable": ["4"]}}
    scores = doc["validation"]["scores"]
    assert scores["probe"]["hits"] == scores["probe"]["n"] == 1
    assert scores["probe"]["mean_abs_log2_error"] == 0
    assert doc["rows"][0]["predictions"]["adalora"]["choice"] == "4"
    assert "probe: 1/1 hits" in text
    # a sweep that trained other tasks validates nothing of these: refused before probing
    code, text = call_cli(
        monkeypatch, capsys, "probe", *argv, "--set", "tasks.train=[toy-med]",
        "--validate", str(tmp_path / "sweep"),
    )  # fmt: skip
    assert code == 2 and "recommends nothing for toy-med" in text and "Traceback" not in text
