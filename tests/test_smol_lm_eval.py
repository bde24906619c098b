"""rankscope's evaluation agrees with lm-evaluation-harness 0.4.13 item by item on the real
SmolLM2-135M-Instruct (issue 15): MMLU `acc` 0-shot and 5-shot (lm-eval's default `mmlu`
prompt, tests/tasks/test_mmlu.py), `acc_norm` on the option texts, and GSM8K generation
(strict and flexible), on a handful of the shipped items. Both sides see the same prompt
strings (no chat template: lm-eval's default); `benchmarks/eval_vs_lm_eval.py --model
smollm2-135m-instruct` runs the same comparison on 200+ items with its wall times."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from test_lm_eval_agreement import harness_gsm8k_config, harness_mcq_config, run_harness

pytestmark = pytest.mark.smol

SMOL_DATA = Path(__file__).resolve().parents[1] / "src/rankscope/data/smol"
N_MCQ = 6


def smol_items(task: str, n: int, **data) -> list:
    """n test items of the shipped SmolLM2 data, spread over the file (and MMLU subjects)."""
    import warnings

    from rankscope.config import DataConfig
    from rankscope.tasks import TASKS, TaskContext

    ctx = TaskContext(data=DataConfig(source="files", dir=str(SMOL_DATA), **data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        items = TASKS[task].items("test", ctx)
    return items[:: max(1, len(items) // n)][:n]


@pytest.fixture(scope="module")
def smol_lm(smol_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(smol_dir).eval(), AutoTokenizer.from_pretrained(
        smol_dir
    )


@pytest.fixture(scope="module")
def mmlu_runs(smol_dir: Path, smol_lm) -> dict[str, tuple[list, list, dict]]:
    """{case: (items, rankscope predictions, harness samples)} for 0-shot, 5-shot and acc_norm,
    the harness run once on all three tasks."""
    from rankscope.evaluate import evaluate
    from rankscope.tasks import TASKS

    model, tok = smol_lm
    zero, five = smol_items("mmlu", N_MCQ), smol_items("mmlu", N_MCQ, shots=5)
    assert five[0].prompt.count("\nAnswer:") == 6  # five exemplars, then the question
    configs = [
        harness_mcq_config("smol0", zero, False),
        harness_mcq_config("smol5", five, False),
        harness_mcq_config("smolnorm", zero, True),
    ]
    samples = run_harness(smol_dir, configs, batch_size=4)
    out = {}
    for case, items, norm in (("0-shot", zero, False), ("5-shot", five, False)):
        _, preds = evaluate(model, tok, TASKS["mmlu"], items, 4, 0, acc_norm=norm)
        out[case] = (items, preds, samples["smol0" if case == "0-shot" else "smol5"])
    _, preds = evaluate(model, tok, TASKS["mmlu"], zero, 4, 0, acc_norm=True)
    out["acc_norm"] = (zero, preds, samples["smolnorm"])
    return out


def _lls(sample: dict) -> list[float]:
    return [r[0][0] for r in sample["resps"]]


@pytest.mark.parametrize("case", ["0-shot", "5-shot"])
def test_mmlu_acc_agrees_per_item(mmlu_runs, case):
    items, preds, samples = mmlu_runs[case]
    for i, (it, p) in enumerate(zip(items, preds, strict=True)):
        s = samples[i]["none"]
        assert s["arguments"][0][0] == it.prompt
        assert _lls(s) == pytest.approx(p["detail"]["logprobs"], abs=2e-4), it.id
        assert p["correct"] == bool(s["acc"]), it.id
        theirs = max(range(len(it.choices)), key=_lls(s).__getitem__)
        assert p["pred"] == "ABCD"[theirs], it.id
    if case == "5-shot":  # 0-shot, without its chat template, the model says "A" a lot
        assert len({p["pred"] for p in preds}) >= 2, "one letter everywhere proves little"


def test_mmlu_acc_norm_agrees_per_item(mmlu_runs):
    items, preds, samples = mmlu_runs["acc_norm"]
    for i, (it, p) in enumerate(zip(items, preds, strict=True)):
        s = samples[i]["none"]
        assert [a[1] for a in s["arguments"]] == [" " + c for c in it.choices]
        assert _lls(s) == pytest.approx(p["detail"]["option_logprobs"], abs=5e-4), it.id
        assert p["detail"]["correct_norm"] == bool(s["acc_norm"]), it.id
    assert len({p["detail"]["pred_norm"] for p in preds}) >= 2


def test_gsm8k_generation_agrees_per_item(smol_dir: Path, smol_lm):
    """Same greedy text and the same strict and flexible verdicts. Golds are replaced by the
    number rankscope extracted in a first pass on some items, so that agreement on answers
    judged *correct* is tested too."""
    from rankscope.evaluate import evaluate, generate
    from rankscope.tasks import TASKS

    model, tok = smol_lm
    task, max_new = TASKS["gsm8k"], 48
    items = smol_items("gsm8k", 3, gsm8k_shots=1)
    texts = generate(model, tok, items, 3, max_new, task.stop)
    ext = [task.extract(t) for t in texts]
    assert any(e["flexible"] for e in ext), texts  # the model writes numbers
    items = [
        replace(it, answer=e["flexible"]) if i % 2 == 0 and e["flexible"] else it
        for i, (it, e) in enumerate(zip(items, ext, strict=True))
    ]
    _, preds = evaluate(model, tok, task, items, 3, max_new)
    samples = run_harness(smol_dir, [harness_gsm8k_config("smolgsm", items, max_new)], 3)
    samples = samples["smolgsm"]
    for i, (it, p) in enumerate(zip(items, preds, strict=True)):
        strict, flexible = samples[i]["strict-match"], samples[i]["flexible-extract"]
        assert strict["resps"][0][0].strip() == p["detail"]["text"] == texts[i], it.id
        assert p["correct"] == bool(strict["exact_match"]), it.id
        assert p["detail"]["correct_flexible"] == bool(flexible["exact_match"]), it.id
    assert any(p["detail"]["correct_flexible"] for p in preds)
