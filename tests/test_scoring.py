"""rankscope.scoring: a shared token prefix computed once, its KV cache reused, gives the
log-probabilities of scoring every sequence whole; grouping finds the prefixes."""

from __future__ import annotations

import pytest

from rankscope.scoring import MIN_PREFIX, prefix_groups, tail_logprobs


@pytest.fixture(scope="module")
def tiny():
    """A random 2-layer Llama with grouped-query attention (4 query heads over 2 KV heads,
    as SmolLM2's 9 over 3) and a stand-in tokenizer that only supplies the pad id."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    model = LlamaForCausalLM(cfg).eval()

    class Tok:
        pad_token_id = 0

    return model, Tok()


def _seqs(seed: int = 0) -> list[tuple[int, list[int], int]]:
    """Three families of sequences (a shared 40- or 60-token prefix, then 3-20 own tokens,
    1-3 scored positions) and two loners."""
    import random

    rng = random.Random(seed)
    heads = [[rng.randrange(1, 97) for _ in range(n)] for n in (40, 60, 40)]
    out = []
    for h in heads:
        for _ in range(5):
            tail = [rng.randrange(1, 97) for _ in range(rng.randrange(3, 20))]
            out.append((len(out), h + tail, rng.randrange(1, 4)))
    for n in (12, 50):
        out.append((len(out), [rng.randrange(1, 97) for _ in range(n)], 2))
    return out


def _collect(model, tok, seqs, batch_size, share):
    import torch

    got = {}
    for batch, logp, offsets in tail_logprobs(model, tok, seqs, batch_size, share):
        for row, (key, _, _) in enumerate(batch):
            got[key] = logp[offsets[row] : offsets[row + 1]]
    return {k: got[k] for k in sorted(got)}, torch


def test_groups_find_the_shared_prefixes():
    seqs = _seqs()
    groups = prefix_groups(seqs)
    shared = sorted((n, sorted(k for k, _, _ in m)) for n, m in groups if n)
    assert [len(m) for _, m in shared] == [5, 5, 5]
    assert sorted(n for n, _ in shared) == [40, 40, 60] or all(
        n >= 40 for n, _ in shared
    )  # a longer common prefix may follow by chance
    assert sorted(k for _, m in groups for k, _, _ in m) == list(range(len(seqs)))
    loners = [m for n, m in groups if n == 0]
    assert [sorted(k for k, _, _ in m) for m in loners] == [[15, 16]]
    for n, members in groups:
        for _, ids, k in members:  # every scored position stays after the prefix
            assert n <= len(ids) - k


def test_a_prefix_shorter_than_the_minimum_is_not_shared():
    a = (0, list(range(1, MIN_PREFIX)) + [5, 6], 1)
    b = (1, list(range(1, MIN_PREFIX)) + [7, 8], 1)
    assert prefix_groups([a, b]) == [(0, [a, b])]


@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_cached_prefix_gives_the_whole_sequence_scores(tiny, batch_size):
    model, tok = tiny
    seqs = _seqs()
    whole, torch = _collect(model, tok, seqs, batch_size, share=False)
    cached, _ = _collect(model, tok, seqs, batch_size, share=True)
    assert whole.keys() == cached.keys() == set(range(len(seqs)))
    for key in whole:
        assert whole[key].shape == (seqs[key][2], 97)
        assert torch.allclose(cached[key], whole[key], atol=1e-5), key


def test_cached_prefix_scores_equal_unbatched_reference(tiny):
    """Against the definition: each sequence alone, full logits, float64."""
    import copy

    import torch

    model, tok = tiny
    m64 = copy.deepcopy(model).double()
    seqs = _seqs(seed=1)
    cached, _ = _collect(model, tok, seqs, 4, share=True)
    for key, ids, k in seqs:
        with torch.no_grad():
            ref = torch.log_softmax(m64(input_ids=torch.tensor([ids])).logits[0, -k:], -1)
        assert torch.allclose(cached[key].double(), ref, atol=1e-4), key


def test_a_lora_model_shares_prefixes_too(tiny):
    """peft's wrapper passes the cache through: an adapter with non-zero B changes the
    scores, and the cached pass still equals the whole-sequence pass."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    model, tok = tiny
    torch.manual_seed(1)
    cfg = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    lora = get_peft_model(copy.deepcopy(model), cfg).eval()
    seqs = _seqs(seed=2)
    base, _ = _collect(model, tok, seqs, 8, share=True)
    whole, _ = _collect(lora, tok, seqs, 8, share=False)
    cached, _ = _collect(lora, tok, seqs, 8, share=True)
    assert any(not torch.allclose(base[k], whole[k], atol=1e-3) for k in whole)
    for key in whole:
        assert torch.allclose(cached[key], whole[key], atol=1e-5), key


def test_sharing_runs_each_prefix_once(tiny):
    """The cached pass feeds the model fewer tokens: each group's prefix once, then only
    what follows it (so the equalities above compare two different computations)."""
    model, tok = tiny
    seqs = _seqs()
    fed = []
    hook = model.model.embed_tokens.register_forward_hook(lambda m, i, o: fed.append(i[0].numel()))
    try:
        _collect(model, tok, seqs, 64, share=False)
        whole = sum(fed)
        fed.clear()
        _collect(model, tok, seqs, 64, share=True)
        cached = sum(fed)
    finally:
        hook.remove()
    groups = prefix_groups(seqs)
    saved = sum(n * (len(m) - 1) for n, m in groups)
    assert saved >= 3 * 40 * 4  # three families of five share >= 40 tokens
    # unpadded token counts: padding differs between the two batchings, so compare real tokens
    real = sum(len(ids) for _, ids, _ in seqs)
    assert cached < whole and cached <= real - saved + 64 * 4
