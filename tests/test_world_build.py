"""The toy base model's pretraining batches: whole documents packed, each learned alone."""

from __future__ import annotations

import random

import torch

from rankscope.world.build import _batches, _model_config, build_tokenizer
from rankscope.world.generator import PRESETS, make_world, pretrain_line

SPEC = PRESETS["small"]


def _world_and_tok():
    world = make_world(SPEC)
    return world, build_tokenizer(world)


def _model(tok):
    """A randomly initialised small-world model (what pretraining starts from)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(_model_config(SPEC, len(tok), tok)).eval()


def _documents(ids: torch.Tensor, pos: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of every document in a packed row, from its position restarts."""
    starts = [i for i in range(len(pos)) if pos[i] == 0] + [len(pos)]
    return list(zip(starts, starts[1:], strict=False))


def test_rows_hold_whole_documents_with_labels_off_their_first_token():
    world, tok = _world_and_tok()
    ids, labels, pos = next(_batches(world, tok, 1, 64, 128, seed=0))
    assert ids.shape[1] == 128 and ids.shape == labels.shape == pos.shape
    assert sum(int((ids[r] == tok.bos_token_id).sum()) for r in range(len(ids))) == 64
    for r in range(len(ids)):
        docs = _documents(ids[r], pos[r])
        real = [(a, b) for a, b in docs if ids[r, a] == tok.bos_token_id]
        assert len(real) >= 3  # several documents share a row
        for a, b in real:
            assert ids[r, b - 1] == tok.eos_token_id  # never cut: each ends in EOS
            assert labels[r, a] == -100  # nothing learned across a document boundary
            assert torch.equal(labels[r, a + 1 : b], ids[r, a + 1 : b])
        tail = docs[-1] if ids[r, docs[-1][0]] == tok.pad_token_id else None
        if tail:
            assert (labels[r, tail[0] :] == -100).all()
    assert (labels != -100).float().mean() > 0.7  # packing, not padding


def test_a_packed_document_is_computed_exactly_as_if_it_were_alone():
    """transformers reads restarting position ids as packed sequences and masks attention
    between them: the logits of each document in a packed row equal its logits alone."""
    world, tok = _world_and_tok()
    model = _model(tok)
    ids, _, pos = next(_batches(world, tok, 1, 8, 128, seed=0))
    ids, pos = ids[:1], pos[:1]
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0]
        for a, b in _documents(ids[0], pos[0])[:4]:
            alone = model(input_ids=ids[:, a:b], use_cache=False).logits[0]
            torch.testing.assert_close(packed[a:b], alone, atol=1e-5, rtol=1e-4)
        # and without the restarts the same row would leak between documents
        leaky = model(input_ids=ids, use_cache=False).logits[0]
        a, b = _documents(ids[0], pos[0])[1]
        assert not torch.allclose(leaky[a:b], packed[a:b], atol=1e-3)


def test_the_packed_loss_is_the_padded_loss_of_the_same_documents():
    """Packing changes the speed of the build, not what it learns from each step."""
    world, tok = _world_and_tok()
    model = _model(tok)
    ids, labels, pos = next(_batches(world, tok, 1, 32, 128, seed=0))
    rng = random.Random(1)  # the stream _batches draws from (seed + 1)
    lines = [pretrain_line(world, rng) for _ in range(32)]
    enc = tok([f"{line} {tok.eos_token}" for line in lines], padding=True, return_tensors="pt")
    padded_labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    with torch.no_grad():
        packed = model(input_ids=ids, labels=labels, position_ids=pos, use_cache=False).loss
        padded = model(**enc, labels=padded_labels).loss
    assert len(ids) < 32 / 2  # a few rows instead of 32
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
