"""MathQA (math word problems from AQuA-RAT), 5-option MCQ.

Prompt: `"{Problem}\\nA. {a}\\n...\\nE. {e}\\nAnswer:"`. Training completion
(`data.mathqa_target`): rationale -> the worked solution (outer quotes removed), a newline,
then `Answer: {letter}`, so the model is trained to write its reasoning first and the
answer it leads to last (a rationale after the letter could not help choose it); letter ->
the gold letter only. Eval scores `acc` by the letter right after the prompt either way: a
model trained on rationales puts less mass on any letter there, but which letter is likeliest
still decides. Few-shot exemplars (data.shots = k, the first k train items) show the letter
only, as the evaluator scores it.

`acc_norm` uses lm-eval's own `mathqa` prompt (`Item.norm_prompt`): `"Question:
{Problem}\\nAnswer:"`, no options listed, each option text scored as a continuation (after a
space) and normalised by its length in characters, so it compares with published numbers.
The option texts are ours: lm-eval's regex misparses the list-encoded rows (a stray quote
kept) and options holding " , " (cut at it), which our parser splits correctly.

Options come as `"a ) 38 , b ) 27.675 , ..."` (split with the README's regex, since an option
may itself contain " , ") or, in ~2% of rows, as a Python-list string `"['a ) 12', ...]"`.

Splits. files: train = `mathqa/dev.json`, test = `mathqa/test.json` (the official train file
is too large to ship; challenge_test.json is a subset of test and unused). hub: train =
train, test = test of `allenai/math_qa`; as that repo is a loading script that `datasets`
>= 4 refuses, its Parquet mirror `regisss/math_qa` (what lm-eval uses) is tried next.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from rankscope.errors import DataError
from rankscope.tasks.base import LETTERS, Item, Task, TaskContext
from rankscope.tasks.mcq import few_shot_loader, mcq_item
from rankscope.tasks.sources import (
    Row,
    RowError,
    data_config,
    data_file,
    hub_label,
    hub_rows,
    need,
    parse_rows,
    read_json_array,
)

HUB_IDS = ("allenai/math_qa", "regisss/math_qa")
FILES = {"train": "mathqa/dev.json", "test": "mathqa/test.json"}
LAYOUT = (
    "mathqa/dev.json and mathqa/test.json (each one JSON array of objects with "
    "'Problem', 'Rationale', 'options', 'correct')"
)
# the README's splitter, widened from [a-e] to [a-z] so a sixth option "f ) ..." is caught
# (checked: the same split for all 7,831 string-encoded rows of dev, test, challenge_test)
_SPLIT = re.compile(r"(?:^| , )([a-z]) \) ")
_LIST_ITEM = re.compile(r"([a-e]) \) ?(.*)", re.DOTALL)

Parsed = tuple[str, list[str], int, str]


def parse_options(text: str) -> list[str]:
    """'a ) x , b ) y , ...' or "['a ) x', ...]" -> five option texts, else RowError."""
    if text.lstrip().startswith("["):
        try:
            items = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            raise RowError(f"options look like a list but do not parse: {text[:80]!r}") from None
        matches = [_LIST_ITEM.fullmatch(str(i).strip()) for i in items]
        letters = [m.group(1) if m else None for m in matches]
        texts = [m.group(2).strip() if m else "" for m in matches]
    else:
        parts = _SPLIT.split(text.strip())
        letters, texts = parts[1::2], [p.strip() for p in parts[2::2]]
        if parts[0].strip():
            letters = [None]
    if letters != list("abcde"):
        raise RowError(f"options do not parse into exactly five options a-e: {text[:120]!r}")
    return texts


def _rationale(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':  # most rationales are quoted
        text = text[1:-1].strip()
    return text


def _parse(row: Any) -> Parsed:
    if not isinstance(row, dict):
        raise RowError(f"expected a JSON object {{...}}, got {type(row).__name__}")
    options = parse_options(need(row, "options"))
    correct = need(row, "correct").strip().lower()
    if correct not in "abcde" or len(correct) != 1:
        raise RowError(f"field 'correct' must be one of a-e, got {row['correct']!r}")
    problem = need(row, "Problem").strip()
    return problem, options, "abcde".index(correct), _rationale(need(row, "Rationale"))


def _hub(split: str, on_bad: str) -> list[tuple[Row, Parsed]]:
    errors = []
    for hub_id in HUB_IDS:
        try:
            rows = hub_rows(hub_id, None, split)
        except DataError as e:
            errors.append(str(e))
            continue
        return parse_rows(hub_label(hub_id, None, split), rows, _parse, on_bad, unit="row")
    raise DataError(" | ".join(errors))


def _items(split: str, ctx: TaskContext) -> list[Item]:
    data = data_config(ctx)
    if data.source == "hub":
        rows, part = _hub(split, data.on_bad_row), split
    else:
        path = data_file(data, FILES[split], LAYOUT)
        rows = parse_rows(str(path), read_json_array(path), _parse, data.on_bad_row)
        part = "dev" if split == "train" else "test"
    items = []
    for row, (problem, options, gold, rationale) in rows:
        completion = target(rationale, LETTERS[gold], data.mathqa_target)
        items.append(
            mcq_item(
                f"mathqa/{part}/{row.index}",
                problem,
                options,
                gold,
                completion,
                norm_prompt=f"Question: {problem}\nAnswer:",
            )
        )
    return items


def target(rationale: str, letter: str, kind: str) -> str:
    """The training completion: the rationale first, then the letter it arrives at (so the
    reasoning can inform the answer), or the letter alone (`data.mathqa_target`)."""
    return f"{rationale}\nAnswer: {letter}" if kind == "rationale" else letter


load = few_shot_loader("mathqa", _items)


TASK = Task(
    "mathqa",
    "mcq",
    load,
    "MathQA math word problems, 5-option MCQ, trained to write the worked rationale, then "
    "the answer letter (data.mathqa_target); acc_norm on lm-eval's mathqa prompt; "
    "files: train = dev.json, test = test.json",
    mmlu_domain=(
        "elementary_mathematics",
        "high_school_mathematics",
        "college_mathematics",
        "high_school_statistics",
    ),
)
