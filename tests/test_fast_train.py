"""Padding-free packing and completion-only logits (`rankscope.fastloss`, issue 16): the same
loss, gradients and training as padded batches with logits at every position."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from sweep_configs import small_sweep
from transformers import DataCollatorForSeq2Seq, LlamaConfig, LlamaForCausalLM, Trainer

from rankscope import fastloss
from rankscope.fastloss import FastTrainer, completion_loss, completion_positions, pack

LENGTHS = [(9, 2), (14, 3), (6, 1), (11, 4)]  # (prompt, completion) tokens per row


def _tiny(attn: str = "sdpa", seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    conf = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        attn_implementation=attn,
    )
    return LlamaForCausalLM(conf).float()


def _lora(model: LlamaForCausalLM):
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    for name, p in peft.named_parameters():  # B = 0 at init: give the adapters some effect
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    return peft


def _rows(seed: int = 1) -> list[dict[str, list[int]]]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n_prompt, n_completion in LENGTHS:
        ids = torch.randint(1, 256, (n_prompt + n_completion,), generator=g).tolist()
        labels = [-100] * n_prompt + ids[n_prompt:]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return rows


def _padded(rows) -> dict[str, torch.Tensor]:
    """Right-padded to the longest row (pad id 0, mask 0, label -100), as the plain path."""
    width = max(len(r["input_ids"]) for r in rows)
    out = {}
    for key, fill in (("input_ids", 0), ("attention_mask", 0), ("labels", -100)):
        out[key] = torch.tensor([r[key] + [fill] * (width - len(r[key])) for r in rows])
    return out


def _forward_inputs(batch) -> dict:
    """A batch as FastTrainer hands it to the model, less the labels."""
    return {**{k: v for k, v in batch.items() if k != "labels"}, "use_cache": False}


def _trainer(cls, model, tmp_path: Path, use_cache: bool = False):
    from transformers import TrainingArguments

    args = TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", use_cache=use_cache
    )
    return cls(model=model, args=args)


ATTN = ["sdpa", "eager"]  # sdpa: per-sequence `packed_sdpa`; eager: transformers' packed mask


@pytest.mark.parametrize("attn", ATTN)
def test_a_packed_row_gives_each_sequence_the_logits_it_has_alone(attn):
    model = _tiny(attn).eval()
    rows = _rows()
    batch = pack(rows)
    assert batch["input_ids"].shape == (1, sum(a + b for a, b in LENGTHS))
    first = sum(LENGTHS[0])
    assert batch["position_ids"][0, first - 1 : first + 2].tolist() == [first - 1, 0, 1]
    with torch.no_grad():
        alone = torch.cat([model(input_ids=torch.tensor([r["input_ids"]])).logits[0] for r in rows])
        with fastloss.packed_attention(model):
            want = fastloss.PACKED_SDPA if attn == "sdpa" else attn
            assert model.config._attn_implementation == want
            packed = model(**_forward_inputs(batch)).logits[0]
        assert model.config._attn_implementation == attn  # restored
        whole_row = model(**_forward_inputs(batch)).logits[0]  # transformers' own packed mask
        # transformers keeps packed sequences apart by their position_ids only when the forward
        # builds no KV cache: with the config's use_cache (true) they mix
        mixed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(whole_row, alone, atol=1e-5, rtol=1e-5)
    assert (mixed[0] - alone).abs().max() > 1e-2
    assert fastloss.keeps_packed_sequences_apart(model)


def test_packed_attention_restores_the_implementation_after_an_error():
    model = _lora(_tiny())
    with pytest.raises(RuntimeError, match="boom"), fastloss.packed_attention(model):
        assert model.get_base_model().config._attn_implementation == fastloss.PACKED_SDPA
        raise RuntimeError("boom")
    assert model.get_base_model().config._attn_implementation == "sdpa"


def test_a_model_that_mixes_packed_sequences_is_trained_on_padded_batches():
    class SeesOneLongSequence(LlamaForCausalLM):
        """Drops the packed layout (positions and boundaries): one causal row."""

        def forward(self, input_ids=None, labels=None, use_cache=None, **kw):
            return super().forward(input_ids=input_ids, labels=labels, use_cache=use_cache)

    model = SeesOneLongSequence(_tiny().config)
    assert not fastloss.keeps_packed_sequences_apart(model)
    with pytest.warns(UserWarning, match="train.packing"):
        collate = fastloss.collator(model, None, packing=True)
    assert isinstance(collate, DataCollatorForSeq2Seq)
    assert not isinstance(fastloss.collator(_tiny(), None, packing=True), DataCollatorForSeq2Seq)


def test_completion_positions_are_where_the_next_label_is_learned():
    labels = torch.tensor([[-100, -100, 5, 6, -100, -100, 7]])
    assert completion_positions(labels).tolist() == [[False, True, True, False, False, True, False]]


def _loss_and_grads(trainer, model, batch, n_items):
    model.zero_grad()
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=n_items)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


@pytest.mark.parametrize("peft", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("layout", ["padded", "packed-sdpa", "packed-eager"])
def test_completion_logits_give_the_models_own_loss_and_gradients(tmp_path, peft, layout):
    """FastTrainer's loss (LM head at the completion positions only) against the plain
    Trainer's (the model's own shifted cross-entropy over all logits) on padded batches,
    normalised by the same item count (as under gradient accumulation: the count of both
    micro-batches), for a plain and a peft-wrapped model."""
    attn = "eager" if layout == "packed-eager" else "sdpa"
    model = _lora(_tiny(attn)) if peft else _tiny(attn)
    model.train()  # dropout is 0 in the tiny config: train mode is deterministic here
    rows = _rows()
    plain = _trainer(Trainer, model, tmp_path / "a")
    # use_cache=True (the Trainer copies it into the model's config): FastTrainer's forward
    # still builds no cache, else the packed sequences would attend to each other
    fast = _trainer(FastTrainer, model, tmp_path / "b", use_cache=True)
    assert model.config.use_cache
    padded = [_padded(rows[:2]), _padded(rows[2:])]
    fast_batches = [pack(rows[:2]), pack(rows[2:])] if layout != "padded" else padded
    n_ref = plain._get_num_items_in_batch(padded, torch.device("cpu"))
    n_fast = fast._get_num_items_in_batch(fast_batches, torch.device("cpu"))
    assert int(n_ref) == int(n_fast) == sum(c for _, c in LENGTHS)
    for ref_batch, fast_batch in zip(padded, fast_batches, strict=True):
        ref, ref_g = _loss_and_grads(plain, model, ref_batch, n_ref)
        with fastloss.packed_attention(model):  # as FastTrainer.train does
            got, got_g = _loss_and_grads(fast, model, fast_batch, n_fast)
        assert abs(got.item() - ref.item()) <= 1e-5 * max(1.0, abs(ref.item()))
        assert ref_g.keys() == got_g.keys() and ref_g
        for k in ref_g:
            torch.testing.assert_close(got_g[k], ref_g[k], atol=1e-5, rtol=1e-4)
    # without a count the loss is the mean over the micro-batch's targets, as the model's
    with fastloss.packed_attention(model):
        out = model(
            **_forward_inputs(fast_batches[0]),
            logits_to_keep=completion_positions(fast_batches[0]["labels"]),
        )
    assert out.logits.shape[0] == LENGTHS[0][1] + LENGTHS[1][1]  # only the kept positions
    mean = completion_loss(out, fast_batches[0]["labels"])
    ref_mean = model(**padded[0]).loss
    assert mean.item() == pytest.approx(ref_mean.item(), rel=1e-5)


def test_a_model_that_ignores_logits_to_keep_still_gets_the_right_loss():
    model = _tiny().eval()
    batch = _padded(_rows())
    with torch.no_grad():
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        ref = model(**batch).loss
    assert full.logits.dim() == 3
    assert completion_loss(full, batch["labels"]).item() == pytest.approx(ref.item(), rel=1e-6)


def _run(tmp_path: Path, cache_dir: Path, method: str, fast: bool) -> tuple[dict, float, str]:
    from rankscope.methods import METHODS, load_base
    from rankscope.plan import make_plan
    from rankscope.sweep import sweep_for
    from rankscope.train import train

    cfg = small_sweep(
        tmp_path / "out",
        cache_dir,
        "tasks.max_train_items=24",
        "methods.base=false",
        f"methods.full.enabled={method == 'full'}",
        f"methods.lora.enabled={method == 'lora'}",
        "methods.lora.ranks=[4]",
        "methods.lora.dropout=0",  # no dropout: packed and padded runs take the same steps
        "train.epochs=1",
        "train.batch_size=4",
        "train.grad_accum=2",
        "train.logging_steps=1",
        "train.save_steps=0",
        "train.precision=fp32",
        f"train.packing={str(fast).lower()}",
        f"train.completion_logits={str(fast).lower()}",
    )
    (run,) = make_plan(cfg)
    items = sweep_for(cfg).items(run.train_task, "train")
    base, tok, _ = load_base(cfg.model)
    from transformers import set_seed

    set_seed(run.seed)
    model = METHODS[method].prepare(base, run, cfg)
    before = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    rec = train(model, tok, items, cfg, run.lr, run.seed, tmp_path / f"w-{method}-{fast}")
    moved = [
        k for k, p in model.named_parameters() if k in before and not torch.equal(p, before[k])
    ]
    inner = model.get_base_model() if method == "lora" else model
    return rec, len(moved) / len(before), inner.config._attn_implementation


@pytest.mark.parametrize("method", ["lora", "full"])
def test_training_with_packing_and_completion_logits_matches_padded_training(
    tmp_path, cache_dir, small_model_dir, monkeypatch, method
):
    """train() with both options on and with both off (the plain Trainer on padded
    batches): the same optimizer steps and the same loss curve, LoRA (peft) and full SFT."""
    seen: list[tuple] = []  # (rows, logits shape) of every loss FastTrainer computed
    packed_layers: list[int] = []  # packed_sdpa calls (one per layer and forward)

    def spy(outputs, labels, num_items_in_batch=None):
        seen.append((labels.shape[0], tuple(outputs["logits"].shape)))
        return completion_loss(outputs, labels, num_items_in_batch)

    def bounds(cu_seq_lens):
        packed_layers.append(1)
        return real_bounds(cu_seq_lens)

    real_bounds = fastloss._bounds
    monkeypatch.setattr(fastloss, "completion_loss", spy)
    monkeypatch.setattr(fastloss, "_bounds", bounds)
    slow, slow_moved, slow_attn = _run(tmp_path, cache_dir, method, fast=False)
    assert not seen and not packed_layers  # both options off: the plain Trainer
    fast, fast_moved, fast_attn = _run(tmp_path, cache_dir, method, fast=True)
    assert len(seen) == 6 and all(rows == 1 and len(shape) == 2 for rows, shape in seen)
    assert len(packed_layers) >= 6  # attention ran per packed sequence ...
    assert fast_attn == slow_attn == "sdpa"  # ... and the model is back on sdpa
    assert [r["step"] for r in fast["log"]] == [r["step"] for r in slow["log"]] == [1, 2, 3]
    for a, b in zip(fast["log"], slow["log"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
    assert math.isfinite(fast["final_train_loss"])
    assert fast["final_train_loss"] == pytest.approx(slow["final_train_loss"], rel=1e-3)
    assert fast_moved > 0.5 and slow_moved > 0.5  # the trainable weights did change
