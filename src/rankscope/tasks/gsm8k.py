"""GSM8K (grade-school math word problems), generative, scored like lm-eval's `gsm8k` task.

Prompt `"Question: {question}\\nAnswer:"`; the training completion is the gold worked answer
(lm-eval's target, ending in `#### N`). Stop strings, the "strict-match" and
"flexible-extract" regexes and the exact_match normalisation (regexes_to_ignore ",", "$",
"(?s).*#### ", trailing ".", then lower-case) are copied from lm-eval's gsm8k.yaml, so our
per-item strict/flexible results equal the harness's. Note that the harness does not parse
numbers: "1080.00" does not match "1080", and neither does it here.

Splits: train / test, from `openai/gsm8k` (config main) or `gsm8k/{train,test}.jsonl`.
Few-shot (data.shots = k): the first k train items as `Question: ...\\nAnswer: {answer}`.
"""

from __future__ import annotations

import re
from typing import Any

from rankscope.tasks.base import Item, Task, TaskContext
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


load = few_shot_loader("gsm8k", _items)


TASK = Task(
    "gsm8k",
    "gen",
    load,
    "GSM8K grade-school math word problems, generative with worked answers; "
    "scored like lm-eval's gsm8k (strict '#### N' and flexible last-number match)",
    stop=STOP,
    extract=extract,
)
