"""Tests for rankscope.analysis.attention: float64 numpy references and a tiny random Llama."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from rankscope.analysis.attention import (
    ablate_heads,
    attention_stats,
    collect,
    eager_attention,
    head_entropy,
    js_divergence,
    linear_cka,
    sink_mass,
    without_first_token,
)

TOL = 1e-6
FAST = settings(max_examples=25, deadline=None)
LN2 = math.log(2.0)

# --------------------------------------------------------------------------- helpers


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _mask(lengths: list[int], t: int) -> np.ndarray:
    """Right-padded 1/0 mask [b, t]."""
    return np.array([[1.0] * n + [0.0] * (t - n) for n in lengths])


def _random_attn(
    rng: np.random.Generator, lengths: list[int], heads: int, t: int, causal: bool = True
) -> np.ndarray:
    """Random attention [b, h, t, t]: rows are distributions over real (and, if causal,
    earlier) keys, with some exact zeros; padded query rows are arbitrary distributions."""
    b = len(lengths)
    logits = rng.standard_normal((b, heads, t, t)) * 2.0
    allowed = np.ones((b, 1, t, t), dtype=bool)
    allowed &= _mask(lengths, t)[:, None, None, :].astype(bool)
    if causal:
        allowed &= np.tril(np.ones((t, t), dtype=bool))[None, None]
    allowed[:, :, :, 0] = True
    p = np.where(allowed, np.exp(logits), 0.0)
    p[rng.random(p.shape) < 0.1] = 0.0  # exact zeros inside the support too
    p[..., 0] += 1e-3  # keep every row non-empty
    return p / p.sum(-1, keepdims=True)


def _real_query_rows(p: np.ndarray, mask: np.ndarray):
    """Yield (head, row restricted to real keys) for every real query position."""
    b, h, _, _ = p.shape
    for i in range(b):
        real = mask[i] > 0
        for head in range(h):
            for q in np.flatnonzero(real):
                row = p[i, head, q][real]
                yield head, row / row.sum()


def _ref_mean(p: np.ndarray, mask: np.ndarray, fn) -> np.ndarray:
    sums, count = np.zeros(p.shape[1]), np.zeros(p.shape[1])
    for head, row in _real_query_rows(p, mask):
        sums[head] += fn(row)
        count[head] += 1
    return sums / count


def _ref_entropy(row: np.ndarray) -> float:
    nz = row[row > 0]
    return float(-(nz * np.log(nz)).sum())


def _ref_kl(a: np.ndarray, b: np.ndarray) -> float:
    nz = a > 0
    return float((a[nz] * np.log(a[nz] / b[nz])).sum())


def _ref_js_mean(p: np.ndarray, q: np.ndarray, mask: np.ndarray) -> np.ndarray:
    sums, count = np.zeros(p.shape[1]), np.zeros(p.shape[1])
    rows_p = list(_real_query_rows(p, mask))
    rows_q = list(_real_query_rows(q, mask))
    for (head, a), (_, b) in zip(rows_p, rows_q, strict=True):
        m = 0.5 * (a + b)
        sums[head] += 0.5 * _ref_kl(a, m) + 0.5 * _ref_kl(b, m)
        count[head] += 1
    return sums / count


def _ref_cka(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean(0)
    y = y - y.mean(0)
    num = np.linalg.norm(x.T @ y, "fro") ** 2
    return float(num / (np.linalg.norm(x.T @ x, "fro") * np.linalg.norm(y.T @ y, "fro")))


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


# --------------------------------------------------------------------------- pure functions

CASES = [([5, 3, 1], 5, 4), ([7], 7, 2), ([2, 6], 8, 3)]


@pytest.mark.parametrize(("lengths", "t", "heads"), CASES)
def test_head_entropy_matches_numpy(lengths: list[int], t: int, heads: int) -> None:
    rng = _rng(1)
    p, mask = _random_attn(rng, lengths, heads, t), _mask(lengths, t)
    got = head_entropy(_t(p).float(), _t(mask)).numpy()
    np.testing.assert_allclose(
        got, _ref_mean(p.astype(np.float32).astype(np.float64), mask, _ref_entropy), atol=TOL
    )


@pytest.mark.parametrize(("lengths", "t", "heads"), CASES)
def test_sink_mass_matches_numpy(lengths: list[int], t: int, heads: int) -> None:
    rng = _rng(2)
    p, mask = _random_attn(rng, lengths, heads, t), _mask(lengths, t)
    got = sink_mass(_t(p), _t(mask).long()).numpy()
    np.testing.assert_allclose(got, _ref_mean(p, mask, lambda r: r[0]), atol=TOL)


@pytest.mark.parametrize(("lengths", "t", "heads"), CASES)
def test_js_divergence_matches_numpy(lengths: list[int], t: int, heads: int) -> None:
    rng = _rng(3)
    p = _random_attn(rng, lengths, heads, t)
    q = _random_attn(rng, lengths, heads, t)
    mask = _mask(lengths, t)
    got = js_divergence(_t(p), _t(q), _t(mask)).numpy()
    np.testing.assert_allclose(got, _ref_js_mean(p, q, mask), atol=TOL)


@pytest.mark.parametrize(("n", "d1", "d2"), [(50, 8, 12), (6, 40, 30), (20, 20, 5)])
def test_linear_cka_matches_numpy(n: int, d1: int, d2: int) -> None:
    rng = _rng(4)
    x = rng.standard_normal((n, d1)) + 3.0  # non-zero column means must be removed
    y = x @ rng.standard_normal((d1, d2)) + 0.5 * rng.standard_normal((n, d2))
    assert linear_cka(_t(x), _t(y)) == pytest.approx(_ref_cka(x, y), abs=TOL)
    assert linear_cka(_t(x).float(), _t(y).float()) == pytest.approx(_ref_cka(x, y), abs=1e-5)


def test_uniform_attention_has_entropy_ln_n() -> None:
    n, t = 5, 8
    p = torch.zeros(1, 2, t, t, dtype=torch.float64)
    p[..., :n] = 1.0 / n
    mask = torch.tensor([[1] * n + [0] * (t - n)])
    torch.testing.assert_close(
        head_entropy(p, mask), torch.full((2,), math.log(n), dtype=torch.float64)
    )


def test_one_hot_on_first_token_is_a_pure_sink() -> None:
    p = torch.zeros(2, 3, 6, 6)
    p[..., 0] = 1.0
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    torch.testing.assert_close(sink_mass(p, mask), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(head_entropy(p, mask), torch.zeros(3, dtype=torch.float64))


def test_js_properties() -> None:
    rng = _rng(5)
    lengths, t = [6, 4], 6
    p, q = (_t(_random_attn(rng, lengths, 3, t)) for _ in range(2))
    mask = _t(_mask(lengths, t))
    assert torch.all(js_divergence(p, p, mask) == 0)
    torch.testing.assert_close(js_divergence(p, q, mask), js_divergence(q, p, mask))
    js = js_divergence(p, q, mask)
    assert torch.all(js > 0) and torch.all(js <= LN2)


def test_js_of_disjoint_supports_is_ln2() -> None:
    t = 4
    p = torch.zeros(1, 2, t, t)
    q = torch.zeros(1, 2, t, t)
    p[..., 0], q[..., 1] = 1.0, 1.0
    mask = torch.ones(1, t)
    torch.testing.assert_close(
        js_divergence(p, q, mask), torch.full((2,), LN2, dtype=torch.float64)
    )


def test_padding_is_ignored() -> None:
    """Padded query rows and mass on padded keys (any values) do not change any metric."""
    rng = _rng(6)
    lengths, t, extra = [5, 2], 5, 3
    p, q = _random_attn(rng, lengths, 2, t), _random_attn(rng, lengths, 2, t)

    def pad(a: np.ndarray) -> np.ndarray:
        big = rng.random((*a.shape[:2], t + extra, t + extra))  # garbage everywhere padded
        big[..., :t, :t] = a * np.where(_mask(lengths, t)[:, None, :, None] > 0, 1.0, 0.0)
        big[..., :t, :t] += np.where(_mask(lengths, t)[:, None, :, None] > 0, 0.0, 1.0)
        return big / big.sum(-1, keepdims=True)

    small_mask, big_mask = _t(_mask(lengths, t)), _t(_mask(lengths, t + extra))
    big_p, big_q = _t(pad(p)), _t(pad(q))
    p, q = _t(p), _t(q)
    for fn in (head_entropy, sink_mass):
        torch.testing.assert_close(fn(big_p, big_mask), fn(p, small_mask), atol=TOL, rtol=0)
    torch.testing.assert_close(
        js_divergence(big_p, big_q, big_mask), js_divergence(p, q, small_mask), atol=TOL, rtol=0
    )


def test_bad_shapes_raise() -> None:
    p = torch.full((1, 2, 3, 3), 1 / 3)
    with pytest.raises(ValueError):
        head_entropy(p, torch.ones(1, 4))
    with pytest.raises(ValueError):
        head_entropy(p[0], torch.ones(1, 3))
    with pytest.raises(ValueError):
        head_entropy(p, torch.zeros(1, 3))
    with pytest.raises(ValueError):
        js_divergence(p, p[..., :2, :], torch.ones(1, 3))
    with pytest.raises(ValueError):
        linear_cka(torch.ones(3, 2), torch.ones(4, 2))


def test_cka_of_identical_is_one() -> None:
    x = _t(_rng(7).standard_normal((30, 10)))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(linear_cka(torch.ones(5, 3), x[:5]))


@FAST
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(3, 40),
    d=st.integers(1, 12),
    scale=st.floats(1e-3, 1e3),
)
def test_cka_invariant_to_rotation_and_scale(seed: int, n: int, d: int, scale: float) -> None:
    rng = _rng(seed)
    x = rng.standard_normal((n, d))
    y = x[:, : max(1, d // 2)] ** 2 + rng.standard_normal((n, max(1, d // 2)))
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    base = linear_cka(_t(x), _t(y))
    assert 0.0 <= base <= 1.0 + 1e-12
    assert linear_cka(_t(x @ q), _t(y)) == pytest.approx(base, abs=TOL)
    assert linear_cka(_t(scale * x), _t(y)) == pytest.approx(base, abs=TOL)


# --------------------------------------------------------------------------- models

LAYERS, HEADS, HIDDEN = 2, 4, 32


def _tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=50,
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
    )
    return LlamaForCausalLM(config).eval()


def _perturbed(model: LlamaForCausalLM, seed: int = 1, size: float = 0.2) -> LlamaForCausalLM:
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in other.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                proj.weight += size * torch.randn(proj.weight.shape, generator=gen)
    return other


def _batch(seed: int, lengths: list[int], t: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (len(lengths), t), generator=gen)
    mask = torch.tensor([[1] * n + [0] * (t - n) for n in lengths])
    return ids * mask, mask


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    return _tiny_llama()


def _logits(m: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return m(input_ids=batch[0], attention_mask=batch[1]).logits


def test_collect_shapes_and_rows_sum_to_one(model: LlamaForCausalLM) -> None:
    ids, mask = _batch(0, [7, 4], 7)
    attns, hidden = collect(model, ids, mask)
    assert len(attns) == len(hidden) == LAYERS
    for attn, h in zip(attns, hidden, strict=True):
        assert attn.shape == (2, HEADS, 7, 7) and h.shape == (2, 7, HIDDEN)
        assert not attn.requires_grad
        real_keys = (attn * mask[:, None, None, :]).sum(-1)  # [b, h, q]
        real_rows = real_keys.permute(0, 2, 1)[mask.bool()]
        torch.testing.assert_close(real_rows, torch.ones_like(real_rows))
    assert model.config._attn_implementation == "sdpa"


def test_eager_attention_restores_previous(model: LlamaForCausalLM) -> None:
    assert model.config._attn_implementation == "sdpa"
    with eager_attention(model):
        assert model.config._attn_implementation == "eager"
        with eager_attention(model):
            assert model.config._attn_implementation == "eager"
        assert model.config._attn_implementation == "eager"
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(RuntimeError), eager_attention(model):
        raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"


def _by_key(rows: list[dict], key: str) -> np.ndarray:
    return np.array([r[key] for r in rows if key in r])


def test_stats_vs_itself(model: LlamaForCausalLM) -> None:
    batches = [_batch(1, [6, 3], 6), _batch(2, [4], 4)]
    rows = attention_stats(model, copy.deepcopy(model), batches)
    head_rows = [r for r in rows if "head" in r]
    assert len(head_rows) == LAYERS * HEADS
    assert {(r["layer"], r["head"]) for r in head_rows} == {
        (lay, h) for lay in range(LAYERS) for h in range(HEADS)
    }
    np.testing.assert_allclose(_by_key(rows, "js_div"), 0.0, atol=1e-12)
    np.testing.assert_allclose(_by_key(rows, "cka"), 1.0, atol=1e-9)
    assert len(_by_key(rows, "cka")) == LAYERS
    for base in (model, None):
        same = attention_stats(model, base, batches)
        assert all("js_div" not in r and "cka" not in r for r in same)
        assert len(same) == LAYERS * HEADS
        np.testing.assert_allclose(_by_key(same, "entropy"), _by_key(rows, "entropy"))


def test_stats_weight_batches_by_real_queries(model: LlamaForCausalLM) -> None:
    """Two batches must give the same means as one batch holding all their sequences."""
    other = _perturbed(model)
    (ids1, m1), (ids2, m2) = _batch(3, [6, 2], 6), _batch(4, [1], 6)
    rows = attention_stats(other, model, [(ids1, m1), (ids2, m2)])
    ids, mask = torch.cat([ids1, ids2]), torch.cat([m1, m2])
    attns, hidden = collect(other, ids, mask)
    base_attns, base_hidden = collect(model, ids, mask)
    for layer in range(LAYERS):
        mine = [r for r in rows if r.get("layer") == layer and "head" in r]
        for key, fn in (("entropy", head_entropy), ("sink_mass", sink_mass)):
            np.testing.assert_allclose(_by_key(mine, key), fn(attns[layer], mask), atol=TOL)
        want = js_divergence(attns[layer], base_attns[layer], mask)
        np.testing.assert_allclose(_by_key(mine, "js_div"), want, atol=TOL)
        cka = [r["cka"] for r in rows if r.get("layer") == layer and "cka" in r]
        real = mask.bool()
        real[:, 0] = False  # right-padded: position 0 is each sequence's first real token
        want_cka = linear_cka(hidden[layer][real], base_hidden[layer][real])
        assert cka == [pytest.approx(want_cka, abs=TOL)]


def test_without_first_token_under_right_and_left_padding() -> None:
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0]])
    want = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]).bool()
    assert torch.equal(without_first_token(mask), want)
    assert torch.equal(mask, torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0]]))


def _with_massive_bos(seed: int, bos: int = 0) -> LlamaForCausalLM:
    """A tiny Llama whose BOS embedding is one huge fixed vector (the same in every model
    built here): the residual stream then carries a prompt-independent massive activation at
    position 0, as real LLMs do (Sun et al. 2024), while every other token is this model's own
    random function of the input."""
    model = _tiny_llama(seed)
    with torch.no_grad():
        model.model.embed_tokens.weight[bos] = 0.0
        model.model.embed_tokens.weight[bos, 0] = 1e3
    return model


def _pooled_cka(models: tuple, batches: list, layer: int, select) -> float:
    """Linear CKA of the two models' hidden states at the positions ``select(mask)`` picks."""
    sides = [
        torch.cat([collect(m, ids, mask)[1][layer][select(mask)] for ids, mask in batches])
        for m in models
    ]
    return linear_cka(*sides)


def test_cka_is_not_inflated_by_the_first_token() -> None:
    """Two unrelated models sharing only a massive BOS activation: pooling position 0 gives
    CKA ≈ 1 at the layer whose residual stream carries it; without it CKA is low."""
    models = (_with_massive_bos(0), _with_massive_bos(5))
    batches = []
    for seed in range(4):
        ids, mask = _batch(20 + seed, [16, 12, 16, 9], 16)
        ids[:, 0] = 0  # BOS; the other real tokens are 1..49
        batches.append((ids, mask))
    cka = {r["layer"]: r["cka"] for r in attention_stats(*models, batches) if "cka" in r}
    layer = 0  # pre-norm residual stream (the last layer's hidden state is after the norm)
    assert _pooled_cka(models, batches, layer, lambda m: m.bool()) > 0.99  # every real token
    assert cka[layer] < 0.6
    want = _pooled_cka(models, batches, layer, without_first_token)
    assert cka[layer] == pytest.approx(want, abs=TOL)


def test_stats_vs_perturbed_copy(model: LlamaForCausalLM) -> None:
    rows = attention_stats(_perturbed(model), model, [_batch(5, [8, 5], 8)])
    js = _by_key(rows, "js_div")
    assert np.all(js > 0) and np.all(js <= LN2)
    assert np.all(_by_key(rows, "cka") < 1.0)


def test_ablation_changes_logits_and_cleans_up(model: LlamaForCausalLM) -> None:
    batch = _batch(6, [6, 4], 6)
    before = _logits(model, batch)
    with ablate_heads(model, []):
        assert torch.equal(_logits(model, batch), before)
    with ablate_heads(model, [(1, 2)]):
        assert not torch.allclose(_logits(model, batch), before)
    assert torch.equal(_logits(model, batch), before)
    for attn in (layer.self_attn for layer in model.model.layers):
        assert not attn.o_proj._forward_pre_hooks


@pytest.mark.parametrize("heads", [[(0, 1)], [(1, 3), (0, 0), (1, 0)]])
def test_ablation_equals_zeroing_o_proj_columns(
    model: LlamaForCausalLM, heads: list[tuple[int, int]]
) -> None:
    batch = _batch(7, [5, 5], 5)
    manual = copy.deepcopy(model)
    dim = HIDDEN // HEADS
    with torch.no_grad():
        for layer, head in heads:
            manual.model.layers[layer].self_attn.o_proj.weight[:, head * dim : (head + 1) * dim] = 0
    with ablate_heads(model, heads):
        ablated = _logits(model, batch)
    torch.testing.assert_close(ablated, _logits(manual, batch), atol=1e-5, rtol=0)


def test_ablation_rejects_bad_indices(model: LlamaForCausalLM) -> None:
    for heads in ([(LAYERS, 0)], [(0, HEADS)], [(-1, 0)]):
        with pytest.raises(ValueError), ablate_heads(model, heads):
            pass
    assert all(not layer.self_attn.o_proj._forward_pre_hooks for layer in model.model.layers)


def test_peft_wrapped_model() -> None:
    base = _tiny_llama(seed=3)
    reference = copy.deepcopy(base)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, lora).eval()
    batch = _batch(8, [6, 3], 6)

    assert peft_model.get_base_model().config._attn_implementation == "sdpa"
    with eager_attention(peft_model):
        assert peft_model.get_base_model().config._attn_implementation == "eager"
    assert peft_model.get_base_model().config._attn_implementation == "sdpa"

    attns, hidden = collect(peft_model, *batch)
    assert len(attns) == len(hidden) == LAYERS

    # base_model = the PeftModel's own (adapter-injected) module -> run with adapters disabled
    rows = attention_stats(peft_model, peft_model.get_base_model(), [batch])
    want = attention_stats(peft_model, reference, [batch])
    assert np.all(_by_key(rows, "js_div") > 0)
    for key in ("entropy", "sink_mass", "js_div", "cka"):
        np.testing.assert_allclose(_by_key(rows, key), _by_key(want, key), atol=TOL)

    before = _logits(peft_model, batch)
    with ablate_heads(peft_model, [(0, 2)]):
        ablated = _logits(peft_model, batch)
    assert not torch.allclose(ablated, before)
    assert torch.equal(_logits(peft_model, batch), before)
    dim = HIDDEN // HEADS
    with torch.no_grad():
        o_proj = peft_model.get_base_model().model.layers[0].self_attn.o_proj
        o_proj.weight[:, 2 * dim : 3 * dim] = 0
    torch.testing.assert_close(ablated, _logits(peft_model, batch), atol=1e-5, rtol=0)


def test_grouped_query_attention_is_analysed_per_query_head() -> None:
    """As SmolLM2 (9 query heads over 3 KV heads): maps, statistics and ablation are per
    query head, and two query heads that share a KV head are told apart."""
    torch.manual_seed(3)
    q_heads, kv_heads, hidden = 6, 2, 48
    gqa = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=50,
            hidden_size=hidden,
            intermediate_size=64,
            num_hidden_layers=LAYERS,
            num_attention_heads=q_heads,
            num_key_value_heads=kv_heads,
        )
    ).eval()
    assert gqa.model.layers[0].self_attn.k_proj.out_features == kv_heads * hidden // q_heads
    batch = _batch(8, [6, 4], 6)
    attns, _ = collect(gqa, *batch)
    assert all(a.shape == (2, q_heads, 6, 6) for a in attns)
    # query heads 0 and 1 read the same keys (KV head 0) with their own queries
    assert not torch.allclose(attns[0][:, 0], attns[0][:, 1])
    rows = attention_stats(gqa, None, [batch])
    assert sorted((r["layer"], r["head"]) for r in rows if "head" in r) == [
        (layer, head) for layer in range(LAYERS) for head in range(q_heads)
    ]
    dim = hidden // q_heads
    before = _logits(gqa, batch)
    outs = []
    for head in (0, 1):
        manual = copy.deepcopy(gqa)
        with torch.no_grad():
            manual.model.layers[1].self_attn.o_proj.weight[:, head * dim : (head + 1) * dim] = 0
        with ablate_heads(gqa, [(1, head)]):
            outs.append(_logits(gqa, batch))
        torch.testing.assert_close(outs[-1], _logits(manual, batch), atol=1e-5, rtol=0)
        assert not torch.allclose(outs[-1], before)
    assert not torch.allclose(outs[0], outs[1])
    with pytest.raises(ValueError):  # a KV-head count is not a query-head index bound
        with ablate_heads(gqa, [(0, q_heads)]):
            pass
