"""GSM8K (grade-school math word problems), generative, scored like lm-eval's `gsm8k` task.

Prompt `"Question: {question}\\nAnswer:"`; the training completion is the gold worked answer
(lm-eval's target, ending in `#### N`). Stop strings, the "strict-match" and
"flexible-extract" regexes and the exact_match normalisation (regexes_to_ignore ",", "$",
"(?s).*#### ", trailing ".", then lower-case) are copied from lm-eval's gsm8k.yaml, so our
per-item strict/flexible results equal the harness's. Note that the harness does not parse
numbers: "1080.00" does not match "1080", and neither does it here.

Splits: train / test, from `openai/gsm8k` (config main) or `gsm8k/{train,test}.jsonl`.

Few-shot, as lm-eval's gsm8k (num_fewshot 5): eval prompts start with `data.gsm8k_shots`
(default 5) solved train items, each `Question: ...\\nAnswer: {worked answer}` and a blank
line. Zero-shot, a model never trained on GSM8K rarely ends with `#### N`, so its strict score
measures the format, not the reasoning; the exemplars show the format. They are the first k
train items (lm-eval draws 5 at random per item, seed 1234; a fixed set is the same for every
item and every run), never test items; training prompts stay zero-shot. `data.shots` does not
apply here.
"""

from __future__ import annotations

import re
from typing import Any

from rankscope.tasks.base import DataConfig, Item, Task, TaskContext
from rankscope.tasks.mcq import few_shot_loader
from rankscope.tasks.sources import (
    Row,
    RowError,
    data_config,
    data_file,
    hub_label,
    hub_rows,
    json_object,
    need,
    parse_rows,
    read_jsonl,
)

HUB = ("openai/gsm8k", "main")
LAYOUT = "gsm8k/train.jsonl and gsm8k/test.jsonl (JSON Lines with 'question', 'answer')"

STOP = ("Question:", "</s>", "<|im_end|>")
STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
IGNORE = (",", r"\$", r"(?s).*#### ", r"\.$")


def normalize(text: str) -> str:
    """lm-eval's exact_match normalisation for gsm8k (applied to predictions and gold)."""
    for pattern in IGNORE:
        text = re.sub(pattern, "", text)
    return text.lower()


def extract(text: str) -> dict[str, str | None]:
    """{'strict': first '#### N' number, 'flexible': last number-like run}, normalised.

    None where the harness's regex filter would fall back to '[invalid]'.
    """
    strict = STRICT.findall(text)
    flexible = None
    found = FLEXIBLE.findall(text)
    if found:  # group_select -1: the last match; of its groups the first non-empty one
        groups = [g for g in found[-1] if g]
        flexible = normalize(groups[0].strip()) if groups else None
    return {"strict": normalize(strict[0].strip()) if strict else None, "flexible": flexible}


def _parse(raw: Any) -> tuple[str, str]:
    row = raw if isinstance(raw, dict) else json_object(raw)
    question, answer = need(row, "question"), need(row, "answer")
    if "####" not in answer:
        raise RowError("field 'answer' has no final '#### <number>' line")
    return question, answer


def _rows(split: str, ctx: TaskContext) -> list[tuple[Row, tuple[str, str]]]:
    data = data_config(ctx)
    if data.source == "hub":
        label = hub_label(*HUB, split)
        return parse_rows(label, hub_rows(*HUB, split), _parse, data.on_bad_row, unit="row")
    path = data_file(data, f"gsm8k/{split}.jsonl", LAYOUT)
    return parse_rows(str(path), read_jsonl(path), _parse, data.on_bad_row)


def _items(split: str, ctx: TaskContext) -> list[Item]:
    return [
        Item(
            id=f"gsm8k/{split}/{row.index}",
            prompt=f"Question: {question}\nAnswer:",
            completion=answer,
            answer=normalize(answer),
        )
        for row, (question, answer) in _rows(split, ctx)
    ]


load = few_shot_loader("gsm8k", _items, shots_field="gsm8k_shots")


def setting(data: DataConfig) -> str:
    """How GSM8K is scored under `data`, in one line for the report (its numbers depend on it)."""
    k = data.gsm8k_shots
    shots = f"{k}-shot, exemplars = first {k} train items" if k else "zero-shot"
    return f"{shots}; strict '#### N' and flexible last-number match"


TASK = Task(
    "gsm8k",
    "gen",
    load,
    "GSM8K grade-school math word problems, generative with worked answers; "
    "scored like lm-eval's gsm8k (strict '#### N' and flexible last-number match)",
    stop=STOP,
    extract=extract,
    mmlu_domain=("elementary_mathematics", "high_school_mathematics"),
)
