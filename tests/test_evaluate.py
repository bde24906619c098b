"""Scoring: answer extraction, standard errors, and MCQ scoring on a real tiny model."""

from __future__ import annotations

import math

import pytest

from rankscope.evaluate import mean_stderr
from rankscope.tasks.base import extract_hash_answer, normalize_number


@pytest.mark.parametrize(
    "text, strict, flexible",
    [
        ("3 plus 4 is 7 . #### 7", "7", "7"),
        ("#### 1,080", "1080", "1080"),
        ("so $1,080.00 total\n#### $1,080.00", "1080", "1080"),
        ("it is 12 then 15", None, "15"),
        ("no numbers here", None, None),
        ("#### -3", "-3", "-3"),
        ("#### 7.50", "7.5", "7.5"),
        ("first #### 3 then #### 5", "5", "5"),
        ("#### ", None, None),
    ],
)
def test_extraction(text, strict, flexible):
    assert extract_hash_answer(text) == {"strict": strict, "flexible": flexible}


def test_normalize_number():
    assert normalize_number(" 1,234 ") == "1234" and normalize_number("x") == "x"


def test_mean_stderr_matches_sample_formula():
    xs = [1.0, 0.0, 1.0, 1.0]
    mean, se = mean_stderr(xs)
    var = sum((x - 0.75) ** 2 for x in xs) / 3
    assert mean == 0.75 and se == pytest.approx(math.sqrt(var / 4))
    assert math.isnan(mean_stderr([1.0])[1])


# ------------------------------------------------------------------ on a real tiny model
# The tiny BPE Llama of the lm-eval agreement tests (the letters are single tokens, option
# texts are several), trained briefly so options get distinct scores; real MMLU/GSM8K rows.
@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    from test_lm_eval_agreement import build_tiny_lm, fixture_texts, load

    return load(build_tiny_lm(tmp_path_factory.mktemp("lm"), fixture_texts(), steps=60))


@pytest.fixture(scope="module")
def mmlu_items():
    from test_lm_eval_agreement import fixture_items

    items = fixture_items("mmlu")
    return items[::4]  # every subject, a quarter of the rows: several per group


def reference_option_lls(model, tok, item) -> list[float]:
    """float64, one unpadded sequence per option: the definition, written out directly."""
    import copy

    import torch

    m64 = copy.deepcopy(model).double()
    ctx = tok(item.prompt)["input_ids"]
    out = []
    for choice in item.choices:
        whole = tok(item.prompt + " " + choice)["input_ids"]
        with torch.no_grad():
            logits = m64(input_ids=torch.tensor([whole])).logits[0]
        logp = torch.log_softmax(logits, -1)
        out.append(sum(logp[t - 1, whole[t]].item() for t in range(len(ctx), len(whole))))
    return out


def test_acc_norm_matches_float64_reference(lm, mmlu_items):
    from rankscope.evaluate import eval_mcq

    model, tok = lm
    items = mmlu_items[:12]
    metrics, preds = eval_mcq(model, tok, items, 5, acc_norm=True)
    correct = []
    for it, p in zip(items, preds, strict=True):
        ref = reference_option_lls(model, tok, it)
        assert p["detail"]["option_logprobs"] == pytest.approx(ref, abs=1e-4)
        normed = [ll / len(c) for ll, c in zip(ref, it.choices, strict=True)]
        best = sorted(normed, reverse=True)
        if best[0] - best[1] > 1e-3:  # a near-tie may flip in float32; none expected here
            assert p["detail"]["pred_norm"] == "ABCD"[normed.index(best[0])], it.id
        correct.append(p["detail"]["correct_norm"])
    assert metrics["acc_norm"][0] == pytest.approx(sum(correct) / len(items))
    assert metrics["acc_norm"][2] == len(items)
    # length normalisation matters: the raw-sum argmax is not the acc_norm prediction everywhere
    assert any(
        max(range(4), key=p["detail"]["option_logprobs"].__getitem__)
        != "ABCD".index(p["detail"]["pred_norm"])
        for p in preds
    )


def test_scores_do_not_depend_on_batching(lm, mmlu_items):
    from rankscope.evaluate import eval_mcq

    model, tok = lm
    _, one = eval_mcq(model, tok, mmlu_items, 1, acc_norm=True)
    _, many = eval_mcq(model, tok, mmlu_items, 7, acc_norm=True)
    for a, b in zip(one, many, strict=True):
        assert a["pred"] == b["pred"] and a["detail"]["pred_norm"] == b["detail"]["pred_norm"]
        assert a["detail"]["logprobs"] == pytest.approx(b["detail"]["logprobs"], abs=1e-4)
        assert a["detail"]["option_logprobs"] == pytest.approx(
            b["detail"]["option_logprobs"], abs=1e-4
        )


def test_per_group_scores_and_micro_average(lm, mmlu_items):
    from rankscope.evaluate import eval_mcq, mean_stderr

    model, tok = lm
    metrics, preds = eval_mcq(model, tok, mmlu_items, 8, acc_norm=True)
    groups = sorted({it.group for it in mmlu_items})
    assert len(groups) == 6
    expected = {"acc", "acc_norm", "gold_logprob"}
    expected |= {f"{m}|{g}" for m in ("acc", "acc_norm") for g in groups}
    assert set(metrics) == expected
    for g in groups:
        mine = [p for it, p in zip(mmlu_items, preds, strict=True) if it.group == g]
        assert metrics[f"acc|{g}"] == (*mean_stderr([float(p["correct"]) for p in mine]), len(mine))
        norm = [float(p["detail"]["correct_norm"]) for p in mine]
        assert metrics[f"acc_norm|{g}"][0] == pytest.approx(sum(norm) / len(mine))
    # task-level acc = size-weighted mean of the groups (= micro average over items)
    weighted = sum(metrics[f"acc|{g}"][0] * metrics[f"acc|{g}"][2] for g in groups)
    assert metrics["acc"][0] == pytest.approx(weighted / len(mmlu_items))


def test_acc_norm_only_when_asked_and_progress_counts_items(lm, mmlu_items):
    from rankscope.evaluate import evaluate
    from rankscope.tasks import TASKS

    model, tok = lm
    for acc_norm in (False, True):
        seen: list[int] = []
        metrics, preds = evaluate(
            model, tok, TASKS["mmlu"], mmlu_items, 8, 0, seen.append, acc_norm=acc_norm
        )
        assert ("acc_norm" in metrics) == acc_norm
        assert ("option_logprobs" in preds[0]["detail"]) == acc_norm
        assert sum(seen) == len(mmlu_items)


def test_items_without_groups_get_no_group_metrics(lm, mmlu_items):
    from dataclasses import replace

    from rankscope.evaluate import eval_mcq

    model, tok = lm
    metrics, preds = eval_mcq(model, tok, [replace(it, group="") for it in mmlu_items[:6]], 8)
    assert set(metrics) == {"acc", "gold_logprob"}  # no `acc|<group>` rows
    gold = [p["detail"]["logprobs"]["ABCD".index(p["gold"])] for p in preds]
    assert metrics["gold_logprob"][0] == pytest.approx(sum(gold) / len(gold), abs=1e-4)
    assert metrics["gold_logprob"][2] == 6 and max(gold) < 0


@pytest.mark.parametrize("task", ["mathqa", "medmcqa"])
def test_acc_norm_scores_lm_evals_prompt_and_acc_the_letters(lm, task):
    """acc_norm scores the item's lm-eval prompt and continuations (MathQA: option texts
    after 'Question: ...\\nAnswer:'; MedMCQA: its letters after its 'Choices:' listing), not
    the lettered prompt; acc still scores the letters after the lettered prompt."""
    from dataclasses import replace

    from test_lm_eval_agreement import fixture_items

    from rankscope.evaluate import eval_mcq, norm_by_chars, score_mcq

    model, tok = lm
    items = fixture_items(task)[:8]
    assert all(it.norm_prompt and it.norm_prompt != it.prompt for it in items)
    metrics, preds = eval_mcq(model, tok, items, 3, acc_norm=True)
    plain = eval_mcq(model, tok, items, 3)[1]
    assert [p["detail"]["logprobs"] for p in preds] == [p["detail"]["logprobs"] for p in plain]
    correct = []
    for it, p in zip(items, preds, strict=True):
        conts = it.norm_choices or it.choices
        ref = reference_option_lls(model, tok, replace(it, prompt=it.norm_prompt, choices=conts))
        assert p["detail"]["option_logprobs"] == pytest.approx(ref, abs=1e-4), it.id
        normed = norm_by_chars(ref, conts)
        assert p["detail"]["pred_norm"] == "ABCDE"[normed.index(max(normed))], it.id
        correct.append(p["detail"]["correct_norm"])
    assert metrics["acc_norm"][0] == pytest.approx(sum(correct) / len(items))
    if task == "medmcqa":  # one-letter choices: acc_norm is the letter argmax on its prompt
        on_norm = score_mcq(model, tok, [replace(it, prompt=it.norm_prompt) for it in items], 3)
        for p, lps in zip(preds, on_norm, strict=True):
            assert p["detail"]["option_logprobs"] == pytest.approx(lps, abs=1e-4)


CHAT = (
    "{% for m in messages %}<s><|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def test_chat_prompts_wrap_the_template_with_one_bos(lm, mmlu_items):
    from dataclasses import replace

    from rankscope.evaluate import evaluate
    from rankscope.prompting import encode, render_prompt
    from rankscope.tasks import TASKS

    model, tok = lm
    tok.chat_template = CHAT
    try:
        items = mmlu_items[:5]
        text = render_prompt(tok, items[0].prompt, chat=True)
        assert text == f"<s><|user|>\n{items[0].prompt}\n<|assistant|>\n"
        ids = encode(tok, [text, items[0].prompt])
        assert [x.count(tok.bos_token_id) for x in ids] == [1, 1]  # the template's BOS only
        wrapped = [replace(it, prompt=render_prompt(tok, it.prompt, True)) for it in items]
        task = TASKS["mmlu"]
        chat = evaluate(model, tok, task, items, 4, 0, acc_norm=True, chat=True)[1]
        assert chat == evaluate(model, tok, task, wrapped, 4, 0, acc_norm=True)[1]
        plain = evaluate(model, tok, task, items, 4, 0, acc_norm=True)[1]
        assert [p["detail"] for p in chat] != [p["detail"] for p in plain]
        assert render_prompt(tok, "x", chat=False) == "x"
    finally:
        tok.chat_template = None


def test_chat_wraps_the_acc_norm_prompt_too(lm):
    from dataclasses import replace

    from test_lm_eval_agreement import fixture_items

    from rankscope.evaluate import evaluate
    from rankscope.prompting import render_prompt
    from rankscope.tasks import TASKS

    model, tok = lm
    tok.chat_template = CHAT
    try:
        items = fixture_items("mathqa")[:4]
        wrapped = [
            replace(
                it,
                prompt=render_prompt(tok, it.prompt, True),
                norm_prompt=render_prompt(tok, it.norm_prompt, True),
            )
            for it in items
        ]
        task = TASKS["mathqa"]
        chat = evaluate(model, tok, task, items, 4, 0, acc_norm=True, chat=True)[1]
        assert chat == evaluate(model, tok, task, wrapped, 4, 0, acc_norm=True)[1]
    finally:
        tok.chat_template = None


def test_chat_without_a_template_is_a_config_error(lm):
    from rankscope.errors import ConfigError
    from rankscope.prompting import render_prompt

    with pytest.raises(ConfigError, match="data.chat_template"):
        render_prompt(lm[1], "Question: 1+1?\nAnswer:", chat=True)


def test_generation_stops_early_with_the_same_text(lm):
    """Stopping at a stop string while generating leaves the text before it unchanged."""
    from test_lm_eval_agreement import fixture_items

    from rankscope.evaluate import _truncate, generate
    from rankscope.tasks import TASKS

    model, tok = lm
    items = fixture_items("gsm8k", gsm8k_shots=0)[:8]
    stops = TASKS["gsm8k"].stop + ("\n",)  # "\n" makes early stops certain
    full = generate(model, tok, items, 4, 40, ())
    cut = generate(model, tok, items, 4, 40, stops)
    assert cut == [_truncate(t, stops).strip() for t in full]
    assert any("\n" in t.strip() for t in full)  # the stop string really occurred
