"""Evaluate a model on a task: MCQ by answer-letter log-likelihood, generation by greedy decoding.

MCQ: one forward pass per question scores every letter (the letters are single tokens after
the prompt), batches sorted by length. Generation: greedy, stop sequences, strict (`#### N`)
and flexible (last number) extraction. Per-item predictions are returned for paired tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from rankscope.tasks import Item, Task
from rankscope.tasks.base import LETTERS

Progress = Callable[[int], None] | None


def mean_stderr(xs: list[float]) -> tuple[float, float]:
    """Mean and its standard error (sample std / sqrt(n)), as lm-eval reports it."""
    n = len(xs)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(xs) / n
    if n < 2:
        return mean, float("nan")
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    return mean, math.sqrt(var / n)


def letter_ids(tok: Any, n: int) -> list[int]:
    """Token id of ' A', ' B', ... as a continuation of a prompt (must be one token each)."""
    ids = []
    for letter in LETTERS[:n]:
        enc = tok(" " + letter, add_special_tokens=False)["input_ids"]
        if len(enc) != 1:
            raise ValueError(f"answer letter {letter!r} is not a single token for this tokenizer")
        ids.append(enc[0])
    return ids


def _batches(items: list[Item], tok: Any, batch_size: int) -> list[list[tuple[int, list[int]]]]:
    encoded = [(i, tok(it.prompt)["input_ids"]) for i, it in enumerate(items)]
    encoded.sort(key=lambda x: -len(x[1]))  # longest first: OOM shows at once, less padding
    return [encoded[i : i + batch_size] for i in range(0, len(encoded), batch_size)]


def _pad(seqs: list[list[int]], pad_id: int, left: bool):
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        sl = slice(width - len(s), width) if left else slice(0, len(s))
        ids[row, sl] = torch.tensor(s)
        mask[row, sl] = 1
    return ids, mask


def score_mcq(
    model: Any, tok: Any, items: list[Item], batch_size: int, progress: Progress = None
) -> list[list[float]]:
    """Per item, the log-probability of each option's letter after the prompt."""
    import torch

    n_opt = max(len(it.choices) for it in items)
    lids = torch.tensor(letter_ids(tok, n_opt))
    device = next(model.parameters()).device
    out: list[list[float]] = [[] for _ in items]
    for batch in _batches(items, tok, batch_size):
        ids, mask = _pad([s for _, s in batch], tok.pad_token_id, left=False)
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        last = mask.sum(1) - 1
        logp = torch.log_softmax(logits[torch.arange(len(batch)), last.to(device)].float(), -1)
        for row, (i, _) in enumerate(batch):
            k = len(items[i].choices)
            out[i] = logp[row, lids[:k].to(device)].tolist()
        if progress:
            progress(len(batch))
    return out


def eval_mcq(
    model: Any, tok: Any, items: list[Item], batch_size: int, progress: Progress = None
) -> tuple[dict[str, tuple[float, float, int]], list[dict]]:
    scores = score_mcq(model, tok, items, batch_size, progress)
    preds, correct = [], []
    for it, s in zip(items, scores, strict=True):
        p = max(range(len(s)), key=s.__getitem__)
        correct.append(float(p == it.gold))
        preds.append(
            {
                "item_id": it.id,
                "pred": LETTERS[p],
                "gold": LETTERS[it.gold],
                "correct": p == it.gold,
                "detail": {"logprobs": [round(x, 5) for x in s]},
            }
        )
    acc, se = mean_stderr(correct)
    return {"acc": (acc, se, len(items))}, preds


def _truncate(text: str, stops: tuple[str, ...]) -> str:
    cut = len(text)
    for s in stops:
        j = text.find(s)
        if j != -1:
            cut = min(cut, j)
    return text[:cut]


def generate(
    model: Any,
    tok: Any,
    items: list[Item],
    batch_size: int,
    max_new_tokens: int,
    stops: tuple[str, ...],
    progress: Progress = None,
) -> list[str]:
    """Greedy continuations, cut at the first stop sequence."""
    import torch

    device = next(model.parameters()).device
    out: list[str] = ["" for _ in items]
    for batch in _batches(items, tok, batch_size):
        ids, mask = _pad([s for _, s in batch], tok.pad_token_id, left=True)
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        for row, (i, _) in enumerate(batch):
            text = tok.decode(gen[row, ids.shape[1] :], skip_special_tokens=False)
            out[i] = _truncate(text, stops + (tok.eos_token, tok.pad_token)).strip()
        if progress:
            progress(len(batch))
    return out


def eval_gen(
    model: Any,
    tok: Any,
    task: Task,
    items: list[Item],
    batch_size: int,
    max_new_tokens: int,
    progress: Progress = None,
):
    texts = generate(model, tok, items, batch_size, max_new_tokens, task.stop, progress)
    strict, flex, preds = [], [], []
    for it, text in zip(items, texts, strict=True):
        ext = task.extract(text) if task.extract else {"strict": text, "flexible": text}
        ok_s, ok_f = ext["strict"] == it.answer, ext["flexible"] == it.answer
        strict.append(float(ok_s))
        flex.append(float(ok_f))
        preds.append(
            {
                "item_id": it.id,
                "pred": ext["strict"],
                "gold": it.answer,
                "correct": ok_s,
                "detail": {"text": text, "flexible": ext["flexible"]},
            }
        )
    (ms, ss), (mf, sf) = mean_stderr(strict), mean_stderr(flex)
    return {"em_strict": (ms, ss, len(items)), "em_flexible": (mf, sf, len(items))}, preds


def evaluate(
    model: Any,
    tok: Any,
    task: Task,
    items: list[Item],
    batch_size: int,
    max_new_tokens: int,
    progress: Progress = None,
):
    """(metrics {name: (value, stderr, n)}, per-item predictions) of one model on one task."""
    if task.kind == "mcq":
        return eval_mcq(model, tok, items, batch_size, progress)
    return eval_gen(model, tok, task, items, batch_size, max_new_tokens, progress)
