"""A continuous retention measure: how far fine-tuning moved the next-token distributions.

Letter accuracy cannot see forgetting when the base model sits near chance (a 135M model
scores 20-33 % on MMLU letters): the letters move at random either way. The mean per-token
KL(base ‖ tuned) of the next-token distributions on held-out general text moves smoothly
with any change of the model, at any accuracy, and is 0 exactly when nothing changed.

The text is the retention task's own (`Task.probe_texts`, else the prompts of its test
items): the toy world's general corpus, MMLU's question texts. A LoRA run's reference is the
same model with its adapter switched off (no second copy); any other run's is the base model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rankscope.prompting import encode


def probe_texts(texts: list[str], n: int) -> list[str]:
    """`n` texts spread evenly over the list (every k-th), so the sample covers every part
    of a task whose items come grouped (MMLU by subject) and is the same on every machine."""
    if n <= 0 or not texts:
        return []
    if len(texts) <= n:
        return list(texts)
    step = len(texts) / n
    return [texts[int(i * step)] for i in range(n)]


@contextlib.contextmanager
def _reference(model: Any, base: Any | None) -> Iterator[Any]:
    """The model to compare with: `base`, or `model` with its peft adapter disabled."""
    if base is not None:
        yield base
    else:
        with model.disable_adapter():
            yield model


def _log_probs(model: Any, ids: Any, mask: Any) -> Any:
    import torch

    with torch.no_grad():
        return torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)


def kl_to_base(
    model: Any,
    tok: Any,
    texts: list[str],
    *,
    base: Any | None = None,
    batch_size: int = 16,
    max_tokens: int = 128,
) -> list[float]:
    """Per text: the mean over its token positions of KL(p_base ‖ p_tuned) in nats, where p
    is the next-token distribution. `base=None`: `model` is a peft model, compared with
    itself with the adapter disabled. Texts are cut to their first `max_tokens` tokens."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    seqs = [ids[:max_tokens] for ids in encode(tok, texts)]
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(seqs), batch_size):
        batch = seqs[start : start + batch_size]
        rows = [torch.tensor(s) for s in batch]
        ids = pad_sequence(rows, batch_first=True, padding_value=tok.pad_token_id).to(device)
        mask = pad_sequence([torch.ones_like(r) for r in rows], batch_first=True).to(device)
        tuned = _log_probs(model, ids, mask)
        with _reference(model, base) as ref:
            ref_lp = _log_probs(ref, ids, mask)
        kl = (ref_lp.exp() * (ref_lp - tuned)).sum(-1)  # [batch, positions]
        real = mask.bool()
        for row in range(len(batch)):
            out.append(float(kl[row][real[row]].mean().clamp_min(0.0)))
    return out
