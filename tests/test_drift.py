"""The continuous retention measure: KL(base ‖ tuned) on general text, and the gold answer's
log-probability, on the shipped small toy model and its general corpus."""

from __future__ import annotations

import copy

import pytest
import torch
from sweep_configs import small_sweep

from rankscope.drift import kl_to_base, probe_texts
from rankscope.methods import METHODS, load_base
from rankscope.plan import make_plan
from rankscope.sweep import sweep_for
from rankscope.tasks import TASKS


@pytest.fixture
def setup(tmp_path, cache_dir, small_model_dir):
    cfg = small_sweep(
        tmp_path / "out", cache_dir, "methods.full.enabled=false", "methods.base=false"
    )
    run = make_plan(cfg)[0]
    model, tok, _ = load_base(cfg.model)
    texts = probe_texts(TASKS["toy-general"].probe_texts(sweep_for(cfg).ctx), 24)
    return cfg, run, model, tok, texts


def _reference_kl(tuned, base, tok, text: str) -> float:
    """KL(base ‖ tuned) per position by torch's kl_div, one text at a time (no padding)."""
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        lt = torch.log_softmax(tuned(input_ids=ids).logits.float(), -1)[0]
        lb = torch.log_softmax(base(input_ids=ids).logits.float(), -1)[0]
    kl = torch.nn.functional.kl_div(lt, lb, log_target=True, reduction="none").sum(-1)
    return float(kl.mean())


def test_kl_is_zero_for_an_untouched_adapter_and_matches_kl_div_once_moved(setup):
    cfg, run, model, tok, texts = setup
    assert len(texts) == 24 and all(t.endswith(" .") for t in texts)  # general-fact statements
    base = copy.deepcopy(model)
    peft_model = METHODS["lora"].prepare(model, run, cfg).eval()  # no dropout
    assert max(kl_to_base(peft_model, tok, texts)) == pytest.approx(0.0, abs=1e-7)  # B = 0
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    kl = kl_to_base(peft_model, tok, texts, batch_size=5)  # padded batches: 5+5+5+5+4
    assert len(kl) == len(texts) == 24  # one value per text, the short last batch included
    assert min(kl) > 1e-4  # moved: every text sees it
    want = [_reference_kl(peft_model, base, tok, text) for text in texts]
    assert kl == pytest.approx(want, rel=1e-4)  # each text its own value, in order
    # the same with an explicit base model (full SFT's path)
    merged = copy.deepcopy(peft_model).merge_and_unload()
    explicit = kl_to_base(merged, tok, texts, base=base, batch_size=5)
    assert explicit == pytest.approx(kl, rel=1e-3, abs=1e-6)


def test_probe_texts_spread_over_the_list():
    texts = [f"t{i}" for i in range(100)]
    assert probe_texts(texts, 4) == ["t0", "t25", "t50", "t75"]
    assert probe_texts(texts[:3], 10) == texts[:3] and probe_texts(texts, 0) == []
