"""Attention-pattern analysis of fine-tuned causal LMs against their base model.

Answers "did fine-tuning change *where* the model looks?" at head granularity:

* per-head attention entropy (diffuse vs. focused heads) and *sink mass* (how much
  attention parks on the first token, Xiao et al. 2023, "attention sinks");
* Jensen–Shannon divergence between the tuned and base model's attention rows on the
  same inputs (how far each head's pattern moved);
* linear CKA (Kornblith et al. 2019) between the tuned and base hidden states per layer
  (how far the representations moved, up to rotation and scale), over every real token but
  each sequence's first, whose prompt-independent massive activation would dominate it;
* head ablation (zero one head's contribution) to test which heads a behaviour needs.

The pure functions take attention probabilities ``[batch, heads, q, k]`` and a right-padded
attention mask ``[batch, k]`` (1 = real token, 0 = padding) and compute in float64: the
quantities compared here (small divergences, CKA close to 1) drown in bf16/fp32 rounding.
Query position ``i`` of a ``q``-long block is key position ``k - q + i`` (``q == k`` for a
plain forward), so the real queries are ``mask[:, k - q:]``.

Model functions work for a plain ``PreTrainedModel`` (Llama layout: ``model.model.layers[i]
.self_attn.o_proj``) and for a peft ``PeftModel`` wrapping one. Transformers 5 defaults to
SDPA attention, which cannot return attention probabilities (``output_attentions=True`` then
only logs a warning and returns an empty tuple), so attentions are collected under
:func:`eager_attention`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

_TINY = torch.finfo(torch.float64).tiny

# (per-layer attention probabilities, per-layer hidden states), as returned by ``collect``.
Collected = tuple[list[Tensor], list[Tensor]]

# --------------------------------------------------------------------------- pure tensor math


def _f64(x: Tensor | np.ndarray) -> Tensor:
    """Detached float64 copy; on the CPU if the device has no float64 (Apple MPS)."""
    t = torch.as_tensor(x).detach()
    if t.device.type == "mps":
        t = t.cpu()
    return t.to(torch.float64)


def _rows(attn: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Attention rows restricted to real keys (renormalized) and real-query weights [b, q].

    Dropping padded keys makes the metrics independent of whatever a kernel leaves there;
    renormalizing keeps each row a distribution so entropy/JS bounds hold.
    """
    p = _f64(attn)
    if p.ndim != 4:
        raise ValueError(f"attention must be [batch, heads, q, k], got shape {tuple(p.shape)}")
    b, _, q, k = p.shape
    m = _f64(mask).to(p.device)
    if tuple(m.shape) != (b, k) or q > k:
        raise ValueError(f"mask must be [batch, k] = {(b, k)} with q <= k, got {tuple(m.shape)}")
    p = p * m[:, None, None, :]
    p = p / p.sum(-1, keepdim=True).clamp_min(_TINY)
    return p, m[:, k - q :]


def _head_sum(values: Tensor, weights: Tensor) -> Tensor:
    """Sum of per-row values [b, h, q] over real queries, per head -> [h]."""
    return (values * weights[:, None, :]).sum(dim=(0, 2))


def _count(weights: Tensor) -> float:
    """Number of real query positions; an all-padding input has no defined mean."""
    n = float(weights.sum())
    if n <= 0:
        raise ValueError("attention mask has no real query positions")
    return n


def _entropy_rows(p: Tensor) -> Tensor:
    """Shannon entropy (nats) of each attention row, with 0·log 0 = 0."""
    return -torch.xlogy(p, p).sum(-1)


def _js_rows(p: Tensor, q: Tensor) -> Tensor:
    """Jensen–Shannon divergence (nats) per row, computed as ½KL(p‖m) + ½KL(q‖m).

    The direct KL form (not H(m) − ½H(p) − ½H(q)) stays accurate for tiny divergences;
    entries with p = 0 contribute 0, and m > 0 wherever p > 0, so no 0/0 arises.
    """
    m = 0.5 * (p + q)
    log_m = torch.log(m.clamp_min(_TINY))
    kl_p = torch.where(p > 0, p * (torch.log(p.clamp_min(_TINY)) - log_m), 0.0).sum(-1)
    kl_q = torch.where(q > 0, q * (torch.log(q.clamp_min(_TINY)) - log_m), 0.0).sum(-1)
    return (0.5 * (kl_p + kl_q)).clamp(0.0, math.log(2.0))


def head_entropy(attn: Tensor, mask: Tensor) -> Tensor:
    """Mean attention entropy per head (nats) over real queries: low = focused head."""
    p, w = _rows(attn, mask)
    return _head_sum(_entropy_rows(p), w) / _count(w)


def sink_mass(attn: Tensor, mask: Tensor) -> Tensor:
    """Mean attention mass on key 0 (BOS) per head: how much the head uses it as a sink."""
    p, w = _rows(attn, mask)
    return _head_sum(p[..., 0], w) / _count(w)


def js_divergence(p: Tensor, q: Tensor, mask: Tensor) -> Tensor:
    """Mean Jensen–Shannon divergence per head (nats, in [0, ln 2]) between two models' rows."""
    if p.shape != q.shape:
        raise ValueError(f"attention shapes differ: {tuple(p.shape)} vs {tuple(q.shape)}")
    pp, w = _rows(p, mask)
    qq, _ = _rows(q, mask)
    return _head_sum(_js_rows(pp, qq), w) / _count(w)


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA between representations [n, d1] and [n, d2] (Kornblith et al. 2019).

    Invariant to orthogonal transforms and isotropic scaling, so it measures how much a
    layer's representation *geometry* changed rather than its basis. Uses the feature form
    ‖XᵀY‖²/(‖XᵀX‖‖YᵀY‖) or the equal Gram form ⟨XXᵀ, YYᵀ⟩/(‖XXᵀ‖‖YYᵀ‖), whichever is
    cheaper for the shapes. Returns NaN if either input has no variance.
    """
    a, b = _f64(x), _f64(y)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"need [n, d1] and [n, d2], got {tuple(a.shape)} and {tuple(b.shape)}")
    a = a - a.mean(0, keepdim=True)
    b = b.to(a.device) - b.to(a.device).mean(0, keepdim=True)
    n, d1, d2 = a.shape[0], a.shape[1], b.shape[1]
    if n * (d1 + d2) < d1 * d2 + d1 * d1 + d2 * d2:
        ga, gb = a @ a.T, b @ b.T
        num, den = (ga * gb).sum(), torch.linalg.norm(ga) * torch.linalg.norm(gb)
    else:
        num = torch.linalg.norm(a.T @ b) ** 2
        den = torch.linalg.norm(a.T @ a) * torch.linalg.norm(b.T @ b)
    return float(num / den) if float(den) > 0 else math.nan


# --------------------------------------------------------------------------- model helpers


def _unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft ``PeftModel`` (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily switch to eager attention, the only kind that returns probabilities.

    Restores the previous implementation (e.g. "sdpa") on exit. Note the switch is made on
    the model's config object, which models built from the same config instance share.
    """
    inner = _unwrap(model)
    previous = inner.config._attn_implementation
    if previous != "eager":
        inner.set_attn_implementation("eager")
    try:
        yield model
    finally:
        if previous != "eager":
            if isinstance(previous, str):
                inner.set_attn_implementation(previous)
            else:
                inner.config._attn_implementation = previous


def _device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (where inputs must go)."""
    return next(model.parameters()).device


def collect(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor
) -> tuple[list[Tensor], list[Tensor]]:
    """Per-layer attention probabilities [b, h, q, k] and hidden states [b, t, d], one forward.

    Hidden states are ``hidden_states[1:]`` (one per decoder layer; as in transformers 4, the
    last one is taken after the final norm). Runs without grad under eager attention.
    """
    device = _device(model)
    with torch.no_grad(), eager_attention(model):
        out = model(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            output_attentions=True,
            output_hidden_states=True,
            use_cache=False,
        )
    attentions, hidden = list(out.attentions or ()), list(out.hidden_states or ())[1:]
    if not attentions or len(attentions) != len(hidden):
        raise RuntimeError(
            f"model returned {len(attentions)} attention maps for {len(hidden)} layers; "
            "it may not support eager attention / output_attentions"
        )
    return attentions, hidden


def _base_collector(model: nn.Module, base_model: nn.Module) -> Callable[..., Any]:
    """``collect`` for the base model.

    A ``PeftModel`` injects its adapters into the very module ``get_base_model()`` returns,
    so for that module "base" means the PeftModel run with its adapters disabled.
    """
    if (
        base_model is not model
        and base_model is _unwrap(model)
        and hasattr(model, "disable_adapter")
    ):

        def run(input_ids: Tensor, attention_mask: Tensor) -> tuple[list[Tensor], list[Tensor]]:
            with model.disable_adapter():
                return collect(model, input_ids, attention_mask)

        return run
    return partial(collect, base_model)


def without_first_token(mask: Tensor) -> Tensor:
    """The boolean mask [b, t] with each sequence's first real token dropped.

    That position (BOS, or whatever token opens every prompt) carries the "massive
    activations" of Sun et al. 2024: a huge hidden state that is nearly the same vector for
    every prompt. Pooled into CKA it dominates the centred Gram matrices of both models and
    pushes CKA towards 1 whatever the other tokens do. Found with ``argmax`` over the mask,
    so it is the first real token under right *and* left padding.
    """
    real = mask.bool().clone()
    rows = torch.arange(real.shape[0], device=real.device)
    first = real.long().argmax(dim=1)  # the first maximum: the first real token
    real[rows, first] = False  # a row with no real token has nothing to drop: all False
    return real


def _cka_tokens(hidden: Tensor, mask: Tensor) -> Tensor:
    """Rows [n, d] of hidden states [b, t, d] pooled for CKA: real tokens but the first."""
    return hidden.detach()[without_first_token(mask).to(hidden.device)].cpu()


class _Totals:
    """Per-layer running sums weighted by real query count, so the final means are exact."""

    def __init__(self, with_base: bool) -> None:
        self.with_base = with_base
        self.count = 0.0
        self.sums: dict[str, list[Tensor]] = {"entropy": [], "sink_mass": [], "js_div": []}
        self.hidden: list[tuple[list[Tensor], list[Tensor]]] = []

    def _add(self, key: str, layer: int, value: Tensor) -> None:
        """Add a per-head sum for ``layer`` to the running total named ``key``."""
        totals = self.sums[key]
        if layer == len(totals):
            totals.append(torch.zeros_like(value, device="cpu"))
        totals[layer] += value.cpu()

    def add_batch(self, mask: Tensor, tuned: Collected, base: Collected | None) -> None:
        """Accumulate one batch's per-head sums and the hidden states CKA pools.

        The attention sums keep position 0: as a key it is what sink mass measures, and every
        row must stay a distribution over all real keys for entropy and JS to mean anything.
        """
        for layer, attn in enumerate(tuned[0]):
            p, w = _rows(attn, mask)
            if layer == 0:
                self.count += float(w.sum())
            self._add("entropy", layer, _head_sum(_entropy_rows(p), w))
            self._add("sink_mass", layer, _head_sum(p[..., 0], w))
            if base is not None:
                base_p, _ = _rows(base[0][layer], mask)
                self._add("js_div", layer, _head_sum(_js_rows(p, base_p), w))
                if layer == len(self.hidden):
                    self.hidden.append(([], []))
                self.hidden[layer][0].append(_cka_tokens(tuned[1][layer], mask))
                self.hidden[layer][1].append(_cka_tokens(base[1][layer], mask))

    def rows(self) -> list[dict[str, Any]]:
        """Output rows: one per (layer, head), then one CKA row per layer."""
        if self.count <= 0:
            raise ValueError("no real query positions in any batch")
        keys = ["entropy", "sink_mass"] + (["js_div"] if self.with_base else [])
        out: list[dict[str, Any]] = []
        for layer, ent in enumerate(self.sums["entropy"]):
            for head in range(ent.shape[0]):
                row: dict[str, Any] = {"layer": layer, "head": head}
                row.update({k: float(self.sums[k][layer][head]) / self.count for k in keys})
                out.append(row)
        for layer, (tuned, base) in enumerate(self.hidden):
            out.append({"layer": layer, "cka": linear_cka(torch.cat(tuned), torch.cat(base))})
        return out


def attention_stats(
    model: nn.Module,
    base_model: nn.Module | None,
    batches: Iterable[tuple[Tensor, Tensor]],
) -> list[dict[str, Any]]:
    """Per-head entropy / sink mass / JS-vs-base and per-layer CKA-vs-base over all batches.

    Means are over every real query position of every batch (sums weighted by real query
    count, not a mean of batch means). CKA pools every real token position across batches
    except each sequence's first (see :func:`without_first_token`); their hidden states are
    kept on the CPU in the model dtype until the end. With no base
    model (or ``base_model is model``) the js_div key and the CKA rows are omitted. If
    ``base_model`` is a PeftModel's own underlying module, it is run with adapters disabled.
    """
    with_base = base_model is not None and base_model is not model
    base_collect = _base_collector(model, base_model) if with_base else None
    totals = _Totals(with_base)
    for input_ids, mask in batches:
        tuned = collect(model, input_ids, mask)
        base = base_collect(input_ids, mask) if base_collect is not None else None
        if base is not None and len(base[0]) != len(tuned[0]):
            raise ValueError(f"model has {len(tuned[0])} layers, base model {len(base[0])}")
        totals.add_batch(mask, tuned, base)
    return totals.rows()


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a (peft-wrapped) Llama-layout model."""
    root = _unwrap(model)
    for candidate in (getattr(root, "model", None), root):
        layers = getattr(candidate, "layers", None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ValueError(f"cannot find decoder layers (.model.layers) on {type(root).__name__}")


def _head_dim(model: nn.Module, attn: nn.Module) -> int:
    """Per-head width of the o_proj input: the module's own, else config.head_dim / split."""
    dim = getattr(attn, "head_dim", None)
    if dim is None:
        config = _unwrap(model).config
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return int(dim)


def _zero_slices_hook(columns: Tensor) -> Callable[..., Any]:
    """Forward pre-hook that zeros the given last-dim columns of the module's first input."""

    def hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0].clone()
        x[..., columns.to(x.device)] = 0
        return (x, *args[1:])

    return hook


@contextmanager
def ablate_heads(model: nn.Module, heads: list[tuple[int, int]]) -> Iterator[nn.Module]:
    """Zero the contribution of the given (layer, head) pairs while inside the context.

    Done by zeroing each head's slice of the ``self_attn.o_proj`` input (the concatenated
    per-head outputs), which is exactly "this head outputs nothing" and leaves the weights
    (and any LoRA wrapped around o_proj) untouched. Hooks are removed on exit.
    """
    layers = _decoder_layers(model)
    by_layer: dict[int, set[int]] = {}
    for layer, head in heads:
        if not 0 <= layer < len(layers):
            raise ValueError(f"layer {layer} out of range (model has {len(layers)} layers)")
        by_layer.setdefault(layer, set()).add(head)
    handles = []
    try:
        for layer, layer_heads in sorted(by_layer.items()):
            attn = layers[layer].self_attn
            dim = _head_dim(model, attn)
            n_heads = attn.o_proj.in_features // dim
            if not all(0 <= h < n_heads for h in layer_heads):
                raise ValueError(f"heads {sorted(layer_heads)} out of range 0..{n_heads - 1}")
            cols = torch.cat([torch.arange(h * dim, (h + 1) * dim) for h in sorted(layer_heads)])
            handles.append(attn.o_proj.register_forward_pre_hook(_zero_slices_hook(cols)))
        yield model
    finally:
        for handle in handles:
            handle.remove()
