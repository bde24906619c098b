"""LegalMCQ = CaseHOLD (which holding a cited US case stands for), 5-option MCQ.

Prompt: the court-opinion excerpt with the masked holding shown as `<HOLDING>` (the
lex_glue form), then the five candidate holdings as options A-E and "Answer:"; completion
= the gold letter.

Sources. hub: `coastalcph/lex_glue` config `case_hold` (`context`, `endings`, `label` 0-4);
train = its train split, test = its test split. files:
`legalmcq/case_hold_test_sample1000.jsonl` (a 1,000-row sample of the test split, rendered
into an instruction `input_text`; the excerpt is recovered with the README's regex and its
`[Masked Holding]` written as `<HOLDING>`; gold = the index of the `answer` text, which must
occur exactly once in `choices`). As that one file is the only labelled data on disk, train
and test are carved from it by a stable hash of the excerpt, `data.holdout_fraction` of it
being test; ids keep the row's position in the file (`legalmcq/sample/<i>`).
Few-shot (data.shots = k): the first k train items (long: excerpts run to ~200 words).
"""

from __future__ import annotations

import re
from typing import Any

from rankscope.tasks.base import Item, Task, TaskContext
from rankscope.tasks.mcq import carve, few_shot_loader, mcq_item
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

HUB = ("coastalcph/lex_glue", "case_hold")
FILE = "legalmcq/case_hold_test_sample1000.jsonl"
LAYOUT = f"{FILE} (JSON Lines with 'input_text', 'choices' (5), 'answer')"
_CONTEXT = re.compile(
    r'^Given the following excerpt from a US court opinion:\n"(.*)"\n\n'
    r"The \[Masked Holding\] is a placeholder",
    re.DOTALL,
)

Parsed = tuple[str, list[str], int]


def _five(choices: Any, key: str) -> list[str]:
    if not isinstance(choices, list) or len(choices) != 5:
        raise RowError(f"field {key!r} must hold 5 holdings, got {choices!r}"[:200])
    if not all(isinstance(c, str) for c in choices):
        raise RowError(f"field {key!r} must hold strings")
    return [c.strip() for c in choices]


def _parse_file(raw: str) -> Parsed:
    row = json_object(raw)
    m = _CONTEXT.match(need(row, "input_text"))
    if not m:
        raise RowError("field 'input_text' does not follow the CaseHOLD instruction template")
    choices = _five(row.get("choices"), "choices")
    answer = need(row, "answer").strip()
    hits = [i for i, c in enumerate(choices) if c == answer]
    if len(hits) != 1:
        raise RowError(f"the 'answer' text occurs {len(hits)} times in 'choices' (must be once)")
    return m.group(1).replace("[Masked Holding]", "<HOLDING>").strip(), choices, hits[0]


def _parse_hub(row: dict[str, Any]) -> Parsed:
    endings = _five(row.get("endings"), "endings")
    label = need(row, "label", int)
    if not 0 <= label < 5:
        raise RowError(f"field 'label' must be 0-4, got {label}")
    return need(row, "context").strip(), endings, label


def _rows(split: str, ctx: TaskContext) -> tuple[str, list[tuple[Row, Parsed]]]:
    data = data_config(ctx)
    if data.source == "hub":
        rows = parse_rows(
            hub_label(*HUB, split), hub_rows(*HUB, split), _parse_hub, data.on_bad_row, "row"
        )
        return split, rows
    path = data_file(data, FILE, LAYOUT)
    rows = parse_rows(str(path), read_jsonl(path), _parse_file, data.on_bad_row)
    return "sample", carve(split, rows, lambda r: r[1][0], data.holdout_fraction)


def _items(split: str, ctx: TaskContext) -> list[Item]:
    part, rows = _rows(split, ctx)
    return [
        mcq_item(f"legalmcq/{part}/{row.index}", context, choices, gold)
        for row, (context, choices, gold) in rows
    ]


load = few_shot_loader("legalmcq", _items)


TASK = Task(
    "legalmcq",
    "mcq",
    load,
    "CaseHOLD legal holdings (LexGLUE case_hold), 5-option MCQ; hub: train / test; files: "
    "train and test carved from the 1,000-row test sample by a stable hash "
    "(data.holdout_fraction = test)",
    mmlu_domain=("international_law", "jurisprudence", "professional_law"),
)
