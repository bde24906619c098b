"""The method seam: each method owns its runs, hash fields, artifact, cost, ΔW and label."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from sweep_configs import small_sweep

from rankscope import methods, preflight
from rankscope.config import load_config
from rankscope.identity import RunSpec
from rankscope.methods import BASE, FULL, LORA, METHODS, count_params, load_base
from rankscope.plan import make_plan
from rankscope.report.keys import MethodKey


def test_registry_order_is_plan_order():
    assert list(METHODS) == ["base", "full", "lora"]
    assert [m.order for m in METHODS.values()] == [0, 1, 2]
    assert [r.method for r in make_plan(load_config())][:3] == ["base", "full", "lora"]
    with pytest.raises(Exception, match="unknown method 'qlora'"):
        methods.get("qlora")


def test_what_each_method_is():
    assert (BASE.trains, BASE.shared, BASE.baseline, BASE.artifact) == (False, True, True, None)
    assert (FULL.trains, FULL.ranked, FULL.reference, FULL.artifact) == (True, False, True, "model")
    assert (LORA.ranked, LORA.reference, LORA.artifact) == (True, False, "adapter")
    assert [m.flops_per_token for m in (BASE, FULL, LORA)] == [0, 6, 4]


@pytest.mark.parametrize("variant", ["", "rslora", "dora-pissa"])
@pytest.mark.parametrize("rank", [4, 16, 128])
def test_labels_and_order_match_the_report(rank, variant):
    """The report's keys render the same strings and sort the same way as the methods."""
    for m in METHODS.values():
        row = {"method": m.name, "rank": rank if m.ranked else None, "variant": variant}
        key = MethodKey.of(row)
        assert m.label(key.rank, variant) == key.label
        assert m.prose(key.rank, variant) == key.prose
        assert (*m.sort_key(key.rank, variant), 0.0) == key.sort_key  # then the replay fraction


def test_hash_fields_per_method():
    cfg = load_config()
    assert BASE.hash_fields(cfg) == {}
    assert set(FULL.hash_fields(cfg)) == {"train", "train_items"}
    assert "save_steps" not in FULL.hash_fields(cfg)["train"]
    lora = LORA.hash_fields(cfg)
    assert set(lora) == {"train", "train_items", "lora"}
    assert not {"enabled", "ranks", "alpha", "lr", "variants"} & set(lora["lora"])  # per run


def test_lora_variants_are_options_of_one_method():
    cfg = load_config(None, ["methods.lora.variants=[lora,rslora-dora-pissa,pissa]"])
    runs = [r for r in LORA.expand(cfg, "toy-med", 0) if r.rank == 8]
    assert [r.variant for r in runs] == ["", "rslora-dora-pissa", "pissa"]
    peft = [LORA.peft_config(r, cfg) for r in runs]
    assert [(p.use_rslora, p.use_dora, p.init_lora_weights) for p in peft] == [
        (False, False, True),
        (True, True, "pissa"),
        (False, False, "pissa"),
    ]


def test_preflight_builds_no_model_when_no_method_needs_shapes(monkeypatch):
    def no_model(mcfg):
        raise AssertionError("no enabled method checks shapes")

    monkeypatch.setattr(preflight, "meta_model", no_model)
    preflight.check_model_fits(load_config(None, ["methods.lora.enabled=false"]))


@pytest.fixture(scope="module")
def small(tmp_path_factory, cache_dir):
    cfg = small_sweep(tmp_path_factory.mktemp("out"), cache_dir, "methods.lora.ranks=[4]")
    base, tok, _ = load_base(cfg.model)
    names = [n for n, _ in base.named_modules() if n.endswith(("q_proj", "v_proj"))]
    mods = dict(base.named_modules())
    w0 = {n: mods[n].weight.detach().double() for n in names}
    return cfg, base, tok, names, w0


def test_lora_delta_w_is_the_scaled_product_of_the_saved_factors(small, tmp_path):
    cfg, base, tok, names, w0 = small
    (run,) = [r for r in make_plan(cfg) if r.method == "lora"]
    model = LORA.prepare(load_base(cfg.model)[0], run, cfg)
    torch.manual_seed(0)
    with torch.no_grad():
        for _, mod in model.named_modules():
            if hasattr(mod, "lora_B") and "default" in mod.lora_B:
                mod.lora_B["default"].weight.normal_()
    assert LORA.save(model, tok, tmp_path) == tmp_path / "adapter"
    layers = dict(model.get_base_model().named_modules())
    got = {name: (delta, sv) for name, delta, sv in LORA.delta_w(tmp_path, base, names, w0)}
    assert set(got) == set(names) and len(names) > 0  # every analysed module, once
    for name, (delta, sv) in got.items():
        assert sv is not None  # s·B·A: the spectrum from the factors
        layer = layers[name]
        b, a = layer.lora_B["default"].weight, layer.lora_A["default"].weight
        want = (b @ a).double() * layer.scaling["default"]
        torch.testing.assert_close(delta, want.detach(), rtol=1e-5, atol=1e-6)
        top = np.linalg.svd(want.detach().numpy(), compute_uv=False)[: len(sv)]
        np.testing.assert_allclose(np.asarray(sv)[: len(top)], top, rtol=1e-4, atol=1e-6)


def test_full_delta_w_reads_the_saved_weights(small, tmp_path):
    cfg, base, tok, names, w0 = small
    run = RunSpec("t__full__s0", "full", "toy-arith", 0, lr=1e-3)
    model = FULL.prepare(load_base(cfg.model)[0], run, cfg)
    with torch.no_grad():
        dict(model.named_modules())[names[0]].weight.add_(0.5)
    FULL.save(model, tok, tmp_path)
    deltas = {n: d for n, d, _ in FULL.delta_w(tmp_path, base, names, w0)}
    assert set(deltas) == set(names)
    assert torch.allclose(deltas[names[0]], torch.full_like(w0[names[0]], 0.5), atol=1e-6)
    assert all(float(deltas[n].abs().max()) == 0.0 for n in names[1:])
    assert list(BASE.delta_w(tmp_path, base, names, w0)) == []


def test_the_analysis_compares_the_adapters_targets():
    cfg = load_config(None, ["methods.lora.target_modules=[q_proj, v_proj]"])
    assert methods.analysed_targets(cfg) == ["q_proj", "v_proj"]


# ------------------------------------------------------------- DoRA and PiSSA


def _perturbed(cfg, variant: str):
    """A LoRA `variant` model as training leaves it: factors moved off their init (B ≠ 0) and,
    for DoRA, magnitudes off ‖W₀‖ per row; in eval mode (no dropout)."""
    run_id = f"toy-arith__{variant}-r4-a8-lr1e-3__s0"
    run = RunSpec(run_id, "lora", "toy-arith", 0, 4, 8.0, 1e-3, variant)
    model = LORA.prepare(load_base(cfg.model)[0], run, cfg)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_magnitude_vector" in name:
                p.mul_(1.0 + 0.3 * torch.randn_like(p))
            elif "lora_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return run, model.eval()


def _adapted_names(model) -> list[str]:
    return [n for n, m in model.get_base_model().named_modules() if hasattr(m, "lora_A")]


def _merged_delta(model, base, names):
    """(W₀ of `names` from the untouched base, merged weight − W₀ as peft merges the model)."""
    mods = dict(base.named_modules())
    w0 = {n: mods[n].weight.detach().double() for n in names}
    merged = dict(copy.deepcopy(model).merge_and_unload().named_modules())
    return w0, {n: merged[n].weight.detach().double() - w0[n] for n in names}


def _logits(model, tok):
    ids = tok("What is 12 + 7? Name a bone of the arm.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(ids).logits


def test_dora_delta_w_includes_the_magnitude_rescaling(small, tmp_path):
    """ΔW of DoRA is m·(W₀ + sBA)/‖W₀ + sBA‖ − W₀, what peft merges, not peft's
    `get_delta_weight` (= sBA), which leaves the magnitude out."""
    cfg, base, tok, _, _ = small
    _, model = _perturbed(cfg, "dora")
    LORA.save(model, tok, tmp_path)
    names = _adapted_names(model)
    w0, want = _merged_delta(model, base, names)
    got = {n: d for n, d, _ in LORA.delta_w(tmp_path, base, names, w0)}
    assert set(got) == set(names)
    for n in names:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-6)
    # and W₀ + ΔW is the model: the base with those weights gives the adapter's logits
    plain = load_base(cfg.model)[0].eval()
    mods = dict(plain.named_modules())
    with torch.no_grad():
        for n in names:
            mods[n].weight.copy_((w0[n] + got[n]).float())
    torch.testing.assert_close(_logits(plain, tok), _logits(model, tok), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", ["pissa", "dora-pissa"])
def test_pissa_is_saved_as_an_adapter_on_the_untouched_base(small, tmp_path, variant):
    """PiSSA trains on W₀ − s·B₀A₀; the saved adapter is converted to rank 2r on W₀, so the
    loaded model keeps W₀, gives the trained model's logits, and ΔW = merged − W₀."""
    cfg, base, tok, _, _ = small
    run, model = _perturbed(cfg, variant)
    trained = _logits(model, tok)
    LORA.save(model, tok, tmp_path)
    names = _adapted_names(model)
    w0, want = _merged_delta(model, base, names)

    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["r"] == 2 * run.rank and saved["init_lora_weights"] is True
    loaded = LORA.load(load_base(cfg.model)[0], tmp_path, cfg.model).eval()
    layers = dict(loaded.get_base_model().named_modules())
    for n in names:  # the base weights are W₀, not PiSSA's residual
        assert torch.equal(layers[n].get_base_layer().weight.detach().double(), w0[n])
    torch.testing.assert_close(_logits(loaded, tok), trained, rtol=1e-4, atol=1e-4)

    deltas = {n: (d, sv) for n, d, sv in LORA.delta_w(tmp_path, base, names, w0)}
    for n in names:
        delta, sv = deltas[n]
        torch.testing.assert_close(delta, want[n], rtol=1e-5, atol=1e-6)
        if sv is not None:  # from the 2r factors: ΔW's spectrum, rank ≤ 2r
            top = np.linalg.svd(want[n].numpy(), compute_uv=False)[: len(sv)]
            np.testing.assert_allclose(np.asarray(sv), top, rtol=1e-4, atol=1e-5)
    # the trained parameters are still the rank-r ones
    assert LORA.trainable_params(base, run, cfg) == count_params(model)[0]


def test_delta_w_of_an_unconverted_pissa_adapter(small, tmp_path):
    """An adapter saved as trained (before the conversion, or gathered by FSDP) still gives
    ΔW against W₀: peft re-applies the residual at load, and the shift is part of ΔW."""
    cfg, base, tok, _, _ = small
    _, model = _perturbed(cfg, "pissa")
    model.save_pretrained(tmp_path / "adapter")
    names = _adapted_names(model)
    w0, want = _merged_delta(model, base, names)
    got = {n: (delta, sv) for n, delta, sv in LORA.delta_w(tmp_path, base, names, w0)}
    assert set(got) == set(names) and len(names) > 0  # every adapted module, once
    for n, (delta, sv) in got.items():
        torch.testing.assert_close(delta, want[n], rtol=1e-5, atol=1e-6)
        assert sv is None  # not s·B·A: a dense SVD is needed
