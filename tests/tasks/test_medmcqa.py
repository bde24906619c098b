"""MedMCQA: the three row layouts and their index bases, the carved split, bad answers."""

from __future__ import annotations

import json

import pytest
from task_helpers import FIXTURES

from rankscope.errors import DataError
from rankscope.tasks import TASKS
from rankscope.tasks.base import check_no_overlap
from rankscope.tasks.mcq import mcq_block

TASK = TASKS["medmcqa"]
FILE = FIXTURES / "medmcqa" / "validation.jsonl"


def raw_rows() -> list[dict]:
    return [json.loads(line) for line in FILE.open()]


def as_original(row: dict, base: int) -> dict:
    """A reduced-layout row in the opa..opd/cop layout, cop counted from `base`."""
    opts = {k: c[3:] for k, c in zip(("opa", "opb", "opc", "opd"), row["choices"], strict=True)}
    return {"question": row["question"], **opts, "cop": row["answer"] + base}


def test_carved_split_covers_the_file_once(ctx):
    train, test = TASK.load("train", ctx()), TASK.load("test", ctx())
    rows = raw_rows()
    assert len(rows) == 80 and len(train) + len(test) == 80
    assert 0.1 < len(test) / 80 < 0.35  # holdout_fraction 0.2 of 80 rows
    assert sorted(it.id for it in train + test) == sorted(
        f"medmcqa/validation/{i}" for i in range(80)
    )
    check_no_overlap("medmcqa", train, "medmcqa", test)
    questions = {it.prompt.split("\nA. ")[0] for it in train}
    assert not questions & {it.prompt.split("\nA. ")[0] for it in test}  # no shared question
    assert TASK.load("test", ctx()) == test  # stable


def test_items_strip_letter_prefixes_and_keep_the_zero_based_answer(ctx):
    rows = raw_rows()
    for it in TASK.load("train", ctx()) + TASK.load("test", ctx()):
        row = rows[int(it.id.rsplit("/", 1)[1])]
        assert it.choices == tuple(c[3:].strip() for c in row["choices"])
        assert it.gold == row["answer"] and it.completion == "ABCD"[row["answer"]]
        assert it.prompt == mcq_block(row["question"].strip(), it.choices)
    first = [
        it for it in TASK.load("train", ctx()) + TASK.load("test", ctx()) if it.id.endswith("/0")
    ]
    assert first[0].prompt.startswith("Which of the following is not true for myelinated nerve")
    assert (
        first[0].choices[0]
        == "Impulse through myelinated fibers is slower than non-myelinated fibers"
    )


@pytest.mark.parametrize("shots", [0, 2])
def test_acc_norm_prompt_and_choices_are_lm_evals(ctx, lm_eval_task, shots):
    """acc_norm scores lm-eval's medmcqa: its doc_to_text (a 'Question:/Choices:' listing)
    and its choices, the letters (one character each, so its acc_norm is its acc); few-shot
    exemplars as its first_n sampler builds them."""
    rows = raw_rows()

    def docs(items):
        return [as_original(rows[int(it.id.rsplit("/", 1)[1])], base=0) for it in items]

    items = TASK.load("test", ctx(shots=shots))
    splits = {"train": docs(TASK.load("train", ctx())), "validation": docs(items)}
    task = lm_eval_task("medmcqa/medmcqa.yaml", splits, fewshot_config={"sampler": "first_n"})
    assert list(task.test_docs()) == splits["validation"]
    for it, doc in zip(items, task.test_docs(), strict=True):
        assert it.norm_prompt == task.fewshot_context(doc, shots), it.id
        assert list(it.norm_choices) == task.doc_to_choice(doc) == ["A", "B", "C", "D"]
        assert it.gold == task.doc_to_target(doc)
        assert it.prompt.endswith(mcq_block(doc["question"], it.choices))  # acc: our prompt
    assert "\nChoices:\nA. " in items[0].norm_prompt


def test_holdout_fraction_moves_the_split(ctx):
    small = TASK.load("test", ctx(holdout_fraction=0.1))
    large = TASK.load("test", ctx(holdout_fraction=0.5))
    assert {it.id for it in small} < {it.id for it in large}  # the hash is fixed, the cut moves


def write(tmp_path, rows: list) -> str:
    folder = tmp_path / "medmcqa"
    folder.mkdir(exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (folder / "validation.jsonl").write_text("\n".join(lines) + "\n")
    return str(folder / "validation.jsonl")


def test_original_layout_counts_cop_from_one(ctx, tmp_path):
    write(tmp_path, [as_original(r, base=1) for r in raw_rows()])
    for split in ("train", "test"):
        assert TASK.load(split, ctx(dir=str(tmp_path))) == TASK.load(split, ctx())


def test_hub_schema_counts_cop_from_zero(ctx, fake_hub):
    rows = [as_original(r, base=0) for r in raw_rows()]
    train_rows = rows[:10]
    fake_hub(
        {
            ("openlifescienceai/medmcqa", None, "validation"): rows,
            ("openlifescienceai/medmcqa", None, "train"): train_rows,
        }
    )
    hub_test = TASK.load("test", ctx(source="hub", dir=None))
    files_all = TASK.load("train", ctx()) + TASK.load("test", ctx())
    assert sorted(hub_test, key=lambda it: it.id) == sorted(files_all, key=lambda it: it.id)
    hub_train = TASK.load("train", ctx(source="hub", dir=None))
    assert [it.id for it in hub_train] == [f"medmcqa/train/{i}" for i in range(10)]
    shot = TASK.load("test", ctx(source="hub", dir=None, shots=2))
    assert shot[0].prompt.startswith(f"{hub_train[0].prompt} {hub_train[0].completion}\n\n")


def test_unlabelled_hub_rows_are_refused(ctx, fake_hub):
    rows = [as_original(r, base=0) for r in raw_rows()[:3]]
    rows[1]["cop"] = -1
    fake_hub({("openlifescienceai/medmcqa", None, "validation"): rows})
    with pytest.raises(
        DataError,
        match=r"medmcqa\[validation\] row 1: field 'cop' must be 0-3, got -1 .an unlabelled",
    ):
        TASK.load("test", ctx(source="hub", dir=None))


GOOD = {"question": "Q?", "choices": ["A. w", "B. x", "C. y", "D. z"], "answer": 2}


@pytest.mark.parametrize(
    "bad, why",
    [
        ({**GOOD, "answer": -1}, "field 'answer' must be 0-3, got -1"),
        ({**GOOD, "answer": 4}, "field 'answer' must be 0-3, got 4"),
        ({**GOOD, "answer": None}, "field 'answer' must be 0-3, got None"),
        ({**GOOD, "choices": ["A. w", "B. x", "C. y"]}, "must hold 4 options, got 3"),
        (
            {**GOOD, "choices": ["A. w", "B. x", "D. y", "C. z"]},
            "option C must be a string starting 'C. '",
        ),
        (
            {"question": "Q?", "opa": "w", "opb": "x", "opc": "y", "opd": "z", "cop": 0},
            "field 'cop' must be 1-4, got 0",
        ),
        ({"question": "Q?", "opa": "w", "opb": "x", "opc": "y", "cop": 1}, "missing field 'opd'"),
        ({"question": "Q?", "options": ["w"]}, "expected either 'choices' . 'answer' or 'opa'"),
        ('{"question": "Q?", ', "malformed JSON"),
    ],
)
def test_bad_rows_name_file_and_line(ctx, tmp_path, bad, why):
    path = write(tmp_path, [GOOD, GOOD, bad])
    with pytest.raises(DataError, match=why) as e:
        TASK.load("train", ctx(dir=str(tmp_path), holdout_fraction=0.01))
    assert str(e.value).startswith(f"{path}:3: ")


def test_skip_mode(ctx, tmp_path):
    path = write(tmp_path, [GOOD, {**GOOD, "answer": 7}, {**GOOD, "question": "Other?"}])
    with pytest.warns(UserWarning, match=f"{path}: skipped 1 malformed row.s. .first at line 2."):
        items = TASK.load("train", ctx(dir=str(tmp_path), on_bad_row="skip", holdout_fraction=0.01))
    assert [it.id for it in items] == ["medmcqa/validation/0", "medmcqa/validation/2"]
