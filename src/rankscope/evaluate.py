"""Evaluate a model on a task: MCQ by answer-letter log-likelihood, generation by greedy decoding.

MCQ `acc`: one forward pass per question scores every letter (the letters are single tokens
after the prompt), batches sorted by length. MCQ `acc_norm` (on request): the summed
log-likelihood of each option text as a continuation of the prompt, divided by its length in
characters, one forward pass per (question, option). A long token prefix shared by many
sequences (few-shot exemplars, an acc_norm question's prompt) is computed once and its KV
cache reused (`rankscope.scoring`). Where the benchmark's lm-eval task
scores acc_norm on a prompt of its own (`Item.norm_prompt` / `norm_choices`: MathQA, MedMCQA)
that prompt and its continuations are scored, so the number compares with lm-eval's.
Generation: greedy, stop strings, strict (`#### N`) and flexible (last number) extraction,
both stored (`em_strict`, `em_flexible`). Items with a `group` (an MMLU
subject) also get per-group scores. Per-item predictions are returned for paired tests.

Tokenisation, continuation splitting and padding follow lm-evaluation-harness 0.4.13's HFLM,
so both give the same per-item predictions (tests/test_lm_eval_agreement.py proves it).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from rankscope.prompting import encode, render_prompt
from rankscope.scoring import Seq, batches, pad, tail_logprobs
from rankscope.tasks import Item, Task
from rankscope.tasks.base import LETTERS

Progress = Callable[[int], None] | None
Metrics = dict[str, tuple[float, float, int]]


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


def score_mcq(
    model: Any, tok: Any, items: list[Item], batch_size: int, progress: Progress = None
) -> list[list[float]]:
    """Per item, the log-probability of each option's letter after the prompt.

    One forward per question serves all its letters: each is one token right after the
    prompt, so they share the prompt's last position (lm-eval reaches the same by caching
    one-token continuations). Prompts must not end in whitespace (lm-eval would move it
    into the continuation)."""
    n_opt = max(len(it.choices) for it in items)
    lids = letter_ids(tok, n_opt)
    prompts = encode(tok, [it.prompt for it in items])
    out: list[list[float]] = [[] for _ in items]
    seqs = [(i, p, 1) for i, p in enumerate(prompts)]
    for batch, logp, _ in tail_logprobs(model, tok, seqs, batch_size):
        for row, (i, _, _) in enumerate(batch):
            out[i] = logp[row, lids[: len(items[i].choices)]].tolist()
        if progress:
            progress(len(batch))
    return out


def _option_seqs(tok: Any, items: list[Item]) -> tuple[list[Seq], list[list[int]]]:
    """One scored sequence per (item, option), split into context and continuation as
    lm-eval's `_encode_pair` does: encode prompt and prompt + ' ' + option, and take the
    continuation as the whole's tokens after the prompt's token count. The model input is
    the whole minus its last token; the last len(continuation) positions are scored."""
    pairs = [(i, j) for i, it in enumerate(items) for j in range(len(it.choices))]
    ctxs = encode(tok, [it.prompt for it in items])
    wholes = encode(tok, [items[i].prompt + " " + items[i].choices[j] for i, j in pairs])
    seqs, conts = [], []
    for key, ((i, _), whole) in enumerate(zip(pairs, wholes, strict=True)):
        cont = whole[len(ctxs[i]) :]
        seqs.append((key, whole[:-1], len(cont)))
        conts.append(cont)
    return seqs, conts


def score_options(
    model: Any, tok: Any, items: list[Item], batch_size: int, progress: Progress = None
) -> list[list[float]]:
    """Per item, the summed log-likelihood of each option text (after a space) given the
    prompt: one forward per (item, option), `batch_size` sequences per batch."""
    import torch

    seqs, conts = _option_seqs(tok, items)
    owner = [i for i, it in enumerate(items) for _ in it.choices]
    slot = [j for it in items for j in range(len(it.choices))]
    left = [len(it.choices) for it in items]  # options still to score, for progress
    out: list[list[float]] = [[0.0] * len(it.choices) for it in items]
    for batch, logp, offsets in tail_logprobs(model, tok, seqs, batch_size):
        targets = torch.tensor([t for key, _, _ in batch for t in conts[key]], device=logp.device)
        tok_lp = logp.gather(1, targets[:, None])[:, 0].tolist()
        done = 0
        for row, (key, _, _) in enumerate(batch):
            out[owner[key]][slot[key]] = sum(tok_lp[offsets[row] : offsets[row + 1]])
            left[owner[key]] -= 1
            done += left[owner[key]] == 0
        if progress and done:
            progress(done)
    return out


def argmax(xs: list[float]) -> int:
    """Index of the largest value; the first on ties (as numpy.argmax in lm-eval)."""
    return max(range(len(xs)), key=xs.__getitem__)


def norm_view(it: Item) -> Item:
    """The item as acc_norm scores it: lm-eval's prompt and continuations where the item has
    them (`norm_prompt`, `norm_choices`), else its own prompt and option texts."""
    if not it.norm_prompt:
        return it
    return replace(it, prompt=it.norm_prompt, choices=it.norm_choices or it.choices)


def norm_by_chars(lls: list[float], choices: tuple[str, ...]) -> list[float]:
    """lm-eval's acc_norm scores: log-likelihood / characters of the option text. An empty
    option counts as one character (lm-eval would divide by zero)."""
    return [ll / max(len(c), 1) for ll, c in zip(lls, choices, strict=True)]


def group_metrics(items: list[Item], name: str, values: list[float]) -> Metrics:
    """`<name>|<group>` (mean, stderr, n) per group of the items that have one.

    The task-level metric stays the micro average over all items; for MMLU that equals
    lm-eval's group score, which weights each subject by its size."""
    by_group: dict[str, list[float]] = defaultdict(list)
    for it, v in zip(items, values, strict=True):
        if it.group:
            by_group[it.group].append(v)
    return {f"{name}|{g}": (*mean_stderr(vs), len(vs)) for g, vs in sorted(by_group.items())}


def _metric(items: list[Item], name: str, correct: list[float]) -> Metrics:
    return {name: (*mean_stderr(correct), len(items)), **group_metrics(items, name, correct)}


def eval_mcq(
    model: Any,
    tok: Any,
    items: list[Item],
    batch_size: int,
    progress: Progress = None,
    *,
    acc_norm: bool = False,
) -> tuple[Metrics, list[dict]]:
    """`acc` by answer letter (and `acc_norm` by option text when asked, on `norm_view`),
    overall and per group, with per-item predictions."""
    views = [norm_view(it) for it in items]
    acc_norm = acc_norm and all(v.choices for v in views)  # needs every item's option texts
    letter_progress = None if acc_norm else progress  # acc_norm's pass is the long one
    scores = score_mcq(model, tok, items, batch_size, letter_progress)
    preds = [_mcq_pred(it, s) for it, s in zip(items, scores, strict=True)]
    metrics = _metric(items, "acc", [float(p["correct"]) for p in preds])
    # the gold letter's log-probability: continuous, so it shows a change near chance too
    gold = [s[it.gold] for it, s in zip(items, scores, strict=True)]
    metrics["gold_logprob"] = (*mean_stderr(gold), len(items))
    if acc_norm:
        lls = score_options(model, tok, views, batch_size, progress)
        norm_ok = []
        for it, p, ll in zip(views, preds, lls, strict=True):
            k = argmax(norm_by_chars(ll, it.choices))
            norm_ok.append(float(k == it.gold))
            p["detail"].update(
                option_logprobs=[round(x, 5) for x in ll],
                pred_norm=LETTERS[k],
                correct_norm=k == it.gold,
            )
        metrics.update(_metric(items, "acc_norm", norm_ok))
    return metrics, preds


def _mcq_pred(it: Item, letter_lps: list[float]) -> dict:
    p = argmax(letter_lps)
    return {
        "item_id": it.id,
        "pred": LETTERS[p],
        "gold": LETTERS[it.gold],
        "correct": p == it.gold,
        "detail": {"logprobs": [round(x, 5) for x in letter_lps]},
    }


def _truncate(text: str, stops: tuple[str, ...]) -> str:
    cut = len(text)
    for s in stops:
        j = text.find(s)
        if j != -1:
            cut = min(cut, j)
    return text[:cut]


def _stop_criteria(tok: Any, stops: tuple[str, ...], start: int):
    """Per row: done once its generated text (never the prompt) contains a stop string, as
    lm-eval's stop criterion; a finished row is then padded, the others go on."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Stops(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            import torch

            texts = tok.batch_decode(input_ids[:, start:], skip_special_tokens=False)
            done = [any(s in t for s in stops) for t in texts]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Stops()]) if stops else None


def generate(
    model: Any,
    tok: Any,
    items: list[Item],
    batch_size: int,
    max_new_tokens: int,
    stops: tuple[str, ...],
    progress: Progress = None,
) -> list[str]:
    """Greedy continuations, cut at the first stop string (the text before it is unchanged
    by stopping early). Decoding skips special tokens after cutting at EOS, as lm-eval."""
    import torch

    device = next(model.parameters()).device
    out: list[str] = ["" for _ in items]
    prompts = encode(tok, [it.prompt for it in items])
    for batch in batches([(i, p, 0) for i, p in enumerate(prompts)], batch_size):
        ids, mask = pad([s for _, s, _ in batch], tok.pad_token_id, left=True)
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
                stopping_criteria=_stop_criteria(tok, stops, ids.shape[1]),
            )
        for row, (i, _, _) in enumerate(batch):
            new = gen[row, ids.shape[1] :].tolist()
            if tok.eos_token_id in new:
                new = new[: new.index(tok.eos_token_id)]
            out[i] = _truncate(tok.decode(new, skip_special_tokens=True), stops).strip()
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
) -> tuple[Metrics, list[dict]]:
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
                "detail": {"text": text, "flexible": ext["flexible"], "correct_flexible": ok_f},
            }
        )
    return {**_metric(items, "em_strict", strict), **_metric(items, "em_flexible", flex)}, preds


def _chat(tok: Any, it: Item) -> Item:
    """The item with its prompts (and acc_norm prompt, if any) in the chat template."""
    norm = it.norm_prompt and render_prompt(tok, it.norm_prompt, True)
    return replace(it, prompt=render_prompt(tok, it.prompt, True), norm_prompt=norm)


def evaluate(
    model: Any,
    tok: Any,
    task: Task,
    items: list[Item],
    batch_size: int,
    max_new_tokens: int,
    progress: Progress = None,
    *,
    acc_norm: bool = False,
    chat: bool = False,
) -> tuple[Metrics, list[dict]]:
    """(metrics {name: (value, stderr, n)}, per-item predictions) of one model on one task.

    `acc_norm` adds option-text scoring to MCQ tasks whose items have option texts; `chat`
    wraps every prompt in the tokenizer's chat template (as training must, see prompting)."""
    if chat:
        items = [_chat(tok, it) for it in items]
    if task.kind == "mcq":
        return eval_mcq(model, tok, items, batch_size, progress, acc_norm=acc_norm)
    return eval_gen(model, tok, task, items, batch_size, max_new_tokens, progress)
