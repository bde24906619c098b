"""Log-probabilities at the end of many token sequences, batched; a shared prefix computed once.

A scored sequence is `(key, input ids, k)`: the log-softmax over the vocabulary is wanted at
its last `k` input positions. Batches are longest first, right-padded, without an attention
mask (as lm-evaluation-harness's HFLM: a causal model's real tokens never see the padding
after them, so a score does not depend on its batch), and only the wanted positions go
through the LM head.

Shared prefixes. The sequences of one evaluation often start with the same long run of
tokens: the few-shot exemplars of an MMLU subject (~80 % of a 5-shot prompt), or the prompt
that every option of an `acc_norm` question continues (CaseHOLD: ~415 tokens, five options).
`tail_logprobs` groups sequences whose common token prefix is at least `MIN_PREFIX` tokens,
runs that prefix once, and scores every member's remaining tokens against its key/value
cache, repeated over the batch. The result is the same computation in a different order:
log-probabilities agree with the uncached pass to float rounding (tests/test_scoring.py),
and predictions with lm-eval's (tests/test_lm_eval_agreement.py).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

Seq = tuple[int, list[int], int]
"""(key, input token ids, number of scored positions at the end of the input)."""

MIN_PREFIX = 32
"""Shortest common prefix (tokens) worth a cached forward of its own."""


def batches(seqs: list[Seq], batch_size: int) -> list[list[Seq]]:
    """Longest first (OOM shows at once, less padding); ties by token ids, as lm-eval orders
    its requests, so both batch the same sequences together."""
    ordered = sorted(seqs, key=lambda s: (-len(s[1]), s[1]))
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def pad(seqs: list[list[int]], pad_id: int, left: bool):
    """(ids, attention mask) of the sequences padded to the longest, on the left or right."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        sl = slice(width - len(s), width) if left else slice(0, len(s))
        ids[row, sl] = torch.tensor(s)
        mask[row, sl] = 1
    return ids, mask


def logits_at(model: Any, ids: Any, keep: Any, cache: Any = None) -> Any:
    """Logits [keep.sum(), vocab] at the True positions of `keep`, in row-major order.

    transformers 5 models take a boolean `logits_to_keep` and project only those positions
    (flattened row-major); a model without it gets the full logits, indexed afterwards."""
    extra = {"cache": cache} if cache is not None else {}
    try:
        logits = model(input_ids=ids, logits_to_keep=keep, **extra).logits
    except TypeError:  # a (remote-code) model without `logits_to_keep`
        logits = model(input_ids=ids, **extra).logits
    return logits[keep] if logits.dim() == 3 else logits


def _batch_logprobs(model: Any, pad_id: int, batch: list[Seq], skip: int, cache: Any):
    """Log-softmax at each sequence's last k positions, the first `skip` tokens of every
    sequence being in `cache` (None: no prefix). Returns (log-probs [sum k, vocab], offsets)."""
    import torch

    ids, _ = pad([s[skip:] for _, s, _ in batch], pad_id, left=False)
    rows = torch.cat([torch.full((k,), r) for r, (_, _, k) in enumerate(batch)])
    cols = torch.cat([torch.arange(len(s) - skip - k, len(s) - skip) for _, s, k in batch])
    device = next(model.parameters()).device
    keep = torch.zeros(ids.shape, dtype=torch.bool)
    keep[rows, cols] = True
    if cache is not None:
        cache = copy.deepcopy(cache)
        cache.batch_repeat_interleave(len(batch))
    with torch.no_grad():
        logits = logits_at(model, ids.to(device), keep.to(device), cache)
    offsets = [0]
    for _, _, k in batch:
        offsets.append(offsets[-1] + k)
    return torch.log_softmax(logits.float(), -1), offsets


def _common(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def prefix_groups(seqs: list[Seq], min_prefix: int = MIN_PREFIX) -> list[tuple[int, list[Seq]]]:
    """[(prefix length, members)]: sequences in token order, cut into runs that share at
    least `min_prefix` leading tokens (every member keeps its scored positions and one more
    token after the prefix). Sequences that share none form groups of prefix length 0."""
    groups: list[tuple[int, list[Seq]]] = []
    alone: list[Seq] = []
    run: list[Seq] = []
    shared = 0

    def close() -> None:
        if len(run) > 1:
            groups.append((shared, list(run)))
        else:
            alone.extend(run)

    for s in sorted(seqs, key=lambda s: s[1]):
        room = len(s[1]) - max(s[2], 1)  # the prefix ends before the scored positions
        if run:
            n = min(shared, _common(run[-1][1], s[1]), room)
            if n >= min_prefix:
                run.append(s)
                shared = n
                continue
            close()
        run, shared = [s], room
    close()
    return groups + ([(0, alone)] if alone else [])


def _prefix_cache(model: Any, prefix: list[int]) -> Any:
    import torch

    device = next(model.parameters()).device
    ids = torch.tensor([prefix], device=device)
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    return getattr(out, "cache", None)


def tail_logprobs(
    model: Any, tok: Any, seqs: list[Seq], batch_size: int, share_prefix: bool = True
) -> Iterator[tuple[list[Seq], Any, list[int]]]:
    """(batch, log-probs [sum k, vocab], row offset of each sequence) for every batch of
    `seqs`; with `share_prefix`, groups with a long common prefix reuse its KV cache."""
    groups = prefix_groups(seqs) if share_prefix else [(0, seqs)]
    for skip, members in groups:
        cache = _prefix_cache(model, members[0][1][:skip]) if skip else None
        if skip and cache is None:  # a model that returns no cache: score whole sequences
            skip = 0
        for batch in batches(members, batch_size):
            logp, offsets = _batch_logprobs(model, tok.pad_token_id, batch, skip, cache)
            yield batch, logp, offsets
