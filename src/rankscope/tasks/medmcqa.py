"""MedMCQA (Indian medical entrance exam questions), 4-option MCQ.

Prompt: `"{question}\\nA. {opa}\\nB. {opb}\\nC. {opc}\\nD. {opd}\\nAnswer:"`, completion = the
gold letter, as for every MCQ benchmark here.

`acc_norm` follows lm-eval's own `medmcqa` task (`Item.norm_prompt`): its prompt
`"Question: {question}\\nChoices:\\nA. {opa}\\n...D. {opd}\\nAnswer:"` lists the options and its
choices are the letters, so it scores " A".." D" and every choice is one character long: its
acc_norm equals its acc, and ours equals both (on that prompt, not ours).

Splits. hub (`openlifescienceai/medmcqa`): train = its train split, test = its validation
split (its test split is unlabelled, cop = -1, and is refused). files: only the labelled
validation split exists (`medmcqa/validation.jsonl`), so train and test are carved from it
by a stable hash of the question text, `data.holdout_fraction` of it being test; ids keep
the row's position in the file (`medmcqa/validation/<i>`).

Row layouts accepted in files: the reduced one (`choices` = ["A. ...", ...], `answer` 0-3),
and the authors' original (`opa`..`opd`, `cop` 1-4). The hub has `opa`..`opd`, `cop` 0-3.
Few-shot (data.shots = k): the first k train items.
"""

from __future__ import annotations

from typing import Any

from rankscope.tasks.base import LETTERS, Item, Task, TaskContext
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

HUB = "openlifescienceai/medmcqa"
HUB_SPLIT = {"train": "train", "test": "validation"}
LAYOUT = (
    "medmcqa/validation.jsonl (JSON Lines with 'question' and either 'choices' + 'answer' "
    "0-3 or 'opa'..'opd' + 'cop' 1-4)"
)
OPTION_KEYS = ("opa", "opb", "opc", "opd")

Parsed = tuple[str, list[str], int]


def _index(value: Any, key: str, base: int) -> int:
    """An answer index counted from `base` -> 0-based, or RowError naming the valid range."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not base <= value < base + 4:
        hint = " (an unlabelled row, as in MedMCQA's test split)" if value == -1 else ""
        raise RowError(f"field {key!r} must be {base}-{base + 3}, got {value!r}{hint}")
    return value - base


def _reduced(row: dict[str, Any]) -> Parsed:
    choices = need(row, "choices", list)
    if len(choices) != 4:
        raise RowError(f"field 'choices' must hold 4 options, got {len(choices)}")
    texts = []
    for letter, c in zip(LETTERS, choices, strict=False):
        if not isinstance(c, str) or not c.startswith(f"{letter}. "):
            raise RowError(
                f"option {letter} must be a string starting {letter + '. '!r}, got {c!r}"
            )
        texts.append(c[3:].strip())
    return need(row, "question").strip(), texts, _index(row.get("answer"), "answer", 0)


def _original(row: dict[str, Any], base: int) -> Parsed:
    options = [str(need(row, k, (str, int, float))).strip() for k in OPTION_KEYS]
    return need(row, "question").strip(), options, _index(row.get("cop"), "cop", base)


def _parse_file(raw: str) -> Parsed:
    row = json_object(raw)
    if "choices" in row:
        return _reduced(row)
    if "opa" in row:
        return _original(row, base=1)  # the authors' release counts cop from 1
    raise RowError("expected either 'choices' + 'answer' or 'opa'..'opd' + 'cop' fields")


def _parse_hub(row: dict[str, Any]) -> Parsed:
    return _original(row, base=0)  # the HF loader already converted cop to 0-3


def _rows(split: str, ctx: TaskContext) -> list[tuple[Row, Parsed]]:
    data = data_config(ctx)
    if data.source == "hub":
        hs = HUB_SPLIT[split]
        rows = parse_rows(
            hub_label(HUB, None, hs),
            hub_rows(HUB, None, hs),
            _parse_hub,
            data.on_bad_row,
            unit="row",
        )
        return rows
    path = data_file(data, "medmcqa/validation.jsonl", LAYOUT)
    rows = parse_rows(str(path), read_jsonl(path), _parse_file, data.on_bad_row)
    return carve(split, rows, lambda r: r[1][0], data.holdout_fraction)


def _items(split: str, ctx: TaskContext) -> list[Item]:
    data = data_config(ctx)
    part = HUB_SPLIT[split] if data.source == "hub" else "validation"
    return [
        mcq_item(
            f"medmcqa/{part}/{row.index}",
            q,
            options,
            gold,
            norm_prompt=lm_eval_prompt(q, options),
            norm_choices=LETTERS[:4],
        )
        for row, (q, options, gold) in _rows(split, ctx)
    ]


def lm_eval_prompt(question: str, options: list[str]) -> str:
    """lm-eval's medmcqa `doc_to_text` (question and options stripped, as in our prompt)."""
    listed = "".join(f"{LETTERS[i]}. {o}\n" for i, o in enumerate(options))
    return f"Question: {question}\nChoices:\n{listed}Answer:"


load = few_shot_loader("medmcqa", _items)


TASK = Task(
    "medmcqa",
    "mcq",
    load,
    "MedMCQA medical entrance-exam questions, 4-option MCQ (acc_norm on lm-eval's medmcqa "
    "prompt: = its acc); hub: train / validation as test; "
    "files: train and test carved from validation.jsonl by a stable hash "
    "(data.holdout_fraction = test)",
    mmlu_domain=(
        "anatomy",
        "clinical_knowledge",
        "college_biology",
        "college_medicine",
        "high_school_biology",
        "human_aging",
        "medical_genetics",
        "nutrition",
        "professional_medicine",
        "virology",
    ),
)
