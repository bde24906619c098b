"""Faster training steps with the same loss: padding-free batches and completion-only logits.

`train.packing`: a micro-batch's sequences are joined into one row (transformers'
`DataCollatorWithFlattening`) with `position_ids` restarting at 0 per sequence, the
sequence boundaries (`cu_seq_lens_q/k`) and no attention mask. How attention keeps the
sequences apart depends on the model's attention implementation:

- sdpa (the default): transformers would build one dense mask over the whole row, so
  attention costs (total tokens)^2 instead of the sum of each sequence's length^2 (a quarter
  of a packed CPU step at 8 x ~120 tokens). While training, the model's implementation is
  switched to `packed_sdpa` (registered as `PACKED_SDPA`), which runs causal sdpa on each
  sequence's slice of the row, and back afterwards (`packed_attention`);
- flash_attention_2/3 read `cu_seq_lens` natively; eager and flex read the packed layout from
  `position_ids` (`masking_utils.find_packed_sequence_indices`). That detection works only
  when the forward builds no KV cache: with `use_cache` on (a model config's default; the
  Trainer overwrites it with `TrainingArguments.use_cache`, False unless set) the packed
  layout is silently ignored and sequences attend to the ones before them. So every training
  forward here passes `use_cache=False` itself.

Before training a probe (`keeps_packed_sequences_apart`) runs two packed sequences the way
training will and compares each one's logits with the model run on it alone; a model that
mixes them (an architecture without these hooks) is trained on padded batches instead.

`train.completion_logits`: the loss is on the completion only (labels -100 elsewhere), so
the LM head (a vocabulary-sized projection, a fifth of a small model's FLOPs per token) and
the cross-entropy run only at the positions t whose next label is learned, through the
model's boolean `logits_to_keep`. The loss is the model's own shifted cross-entropy: summed
over those targets and divided by `num_items_in_batch` (the Trainer's count of learned labels
over the whole accumulated batch), or their mean when the Trainer gives no count.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from transformers import (
    AttentionInterface,
    DataCollatorForSeq2Seq,
    DataCollatorWithFlattening,
    Trainer,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

IGNORE = -100
PACKED_SDPA = "rankscope_packed_sdpa"
_BOUNDS: list[Any] = [None, []]  # the last cu_seq_lens tensor seen and its values (one sync)


def completion_positions(labels: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the positions t whose next label, labels[t + 1], is learned."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[..., :-1] = labels[..., 1:] != IGNORE
    return keep


def completion_loss(
    outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None, **_: Any
) -> torch.Tensor:
    """Cross-entropy of the logits kept at `completion_positions(labels)` (rows in that
    mask's row-major order) against their next tokens. A model that ignored `logits_to_keep`
    returns logits at every position: they are selected here (same loss, no saving)."""
    logits = outputs["logits"]
    if logits.dim() == 3:
        logits = logits[completion_positions(labels)]
    targets = labels[..., 1:][labels[..., 1:] != IGNORE].to(logits.device)
    logits = logits.float()
    if num_items_in_batch is None:
        return torch.nn.functional.cross_entropy(logits, targets)
    loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch


def _bounds(cu_seq_lens: torch.Tensor) -> list[int]:
    """cu_seq_lens as ints, read once per forward (every layer gets the same tensor)."""
    if _BOUNDS[0] is not cu_seq_lens:
        _BOUNDS[:] = [cu_seq_lens, cu_seq_lens.tolist()]
    return _BOUNDS[1]


def packed_sdpa(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """sdpa within each packed sequence of a one-row batch: causal attention on each slice
    between consecutive `cu_seq_lens_q`; plain sdpa (with its mask) for any other batch."""
    if cu_seq_lens_q is None or query.shape[0] != 1:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    bounds = _bounds(cu_seq_lens_q)
    parts = [
        sdpa_attention_forward(
            module,
            query[:, :, a:b],
            key[:, :, a:b],
            value[:, :, a:b],
            None,
            dropout=dropout,
            scaling=scaling,
            is_causal=True,
        )[0]
        for a, b in zip(bounds[:-1], bounds[1:], strict=False)
    ]
    return torch.cat(parts, dim=1), None


AttentionInterface.register(PACKED_SDPA, packed_sdpa)
AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)  # the mask of its plain-sdpa fallback


@contextlib.contextmanager
def packed_attention(model: Any, on: bool = True) -> Iterator[None]:
    """While inside, a model on sdpa attends per packed sequence (`packed_sdpa`); its own
    implementation is restored on the way out, whatever happens inside."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = getattr(getattr(inner, "config", None), "_attn_implementation", None)
    if not on or before != "sdpa" or not hasattr(inner, "set_attn_implementation"):
        yield
        return
    inner.set_attn_implementation(PACKED_SDPA)
    try:
        yield
    finally:
        inner.set_attn_implementation(before)


class FastTrainer(Trainer):
    """`Trainer` whose forward builds no KV cache, attends per packed sequence (`packed`)
    and, with `completion_logits`, projects to the vocabulary only where a completion token
    is next."""

    def __init__(
        self, *args: Any, packed: bool = True, completion_logits: bool = True, **kwargs: Any
    ) -> None:
        if completion_logits:
            kwargs["compute_loss_func"] = completion_loss
        super().__init__(*args, **kwargs)
        self.packed = packed
        self.completion_logits = completion_logits

    def train(self, *args: Any, **kwargs: Any) -> Any:
        with packed_attention(self.model, self.packed):
            return super().train(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        extra: dict[str, Any] = {"use_cache": False}
        if self.completion_logits and "labels" in inputs:
            extra["logits_to_keep"] = completion_positions(inputs["labels"])
        return super().compute_loss(model, {**inputs, **extra}, return_outputs, num_items_in_batch)


def flattening() -> DataCollatorWithFlattening:
    """The padding-free collator: one row, position_ids and the sequence boundaries."""
    return DataCollatorWithFlattening(
        return_position_ids=True, return_flash_attn_kwargs=True, separator_id=IGNORE
    )


def pack(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`rows` as one padding-free batch of shape (1, total tokens)."""
    return flattening()(rows)


def keeps_packed_sequences_apart(model: Any) -> bool:
    """Whether `model`, given two packed sequences as training gives them (`pack`, no cache,
    inside `packed_attention`), returns each one's logits as when it runs alone. Runs in
    eval mode without grad; uses no RNG."""
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    seqs = [torch.arange(3, 9) % vocab, torch.arange(11, 16) % vocab]
    batch = pack([{"input_ids": s.tolist(), "labels": s.tolist()} for s in seqs])
    batch.pop("labels")
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            alone = [model(input_ids=s[None].to(device), use_cache=False).logits[0] for s in seqs]
            with packed_attention(model):
                packed = model(**batch, use_cache=False).logits[0]
    finally:
        for m, training in modes.items():
            m.training = training
    tol = 1e-3 if packed.dtype == torch.float32 else 5e-2  # half-precision logits: coarser
    ref = torch.cat(alone).float()
    return bool((packed.float() - ref).abs().max() <= tol * (1 + ref.abs().max()))


def collator(model: Any, tok: Any, packing: bool) -> Any:
    """The padding-free collator when `packing` is on and the model keeps packed sequences
    apart; else padding to the longest sequence of the batch (with a warning if asked)."""
    if packing and keeps_packed_sequences_apart(model):
        return flattening()
    if packing:
        warnings.warn(
            "train.packing: this model mixes packed sequences in attention (it reads neither "
            "their position_ids nor their boundaries); training on padded batches instead",
            stacklevel=2,
        )
    return DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=IGNORE)
