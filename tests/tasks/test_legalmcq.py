"""LegalMCQ (CaseHOLD): excerpt recovery, gold = index of the answer text, carved split, hub."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from task_helpers import FIXTURES

from rankscope.errors import DataError
from rankscope.tasks import TASKS
from rankscope.tasks.base import check_no_overlap

TASK = TASKS["legalmcq"]
FILE = FIXTURES / "legalmcq" / "case_hold_test_sample1000.jsonl"


def raw_rows() -> list[dict]:
    return [json.loads(line) for line in FILE.open()]


def excerpt(row: dict) -> str:
    """The README's recipe, written out independently of the loader."""
    text = row["input_text"]
    head = 'Given the following excerpt from a US court opinion:\n"'
    tail = '"\n\nThe [Masked Holding] is a placeholder'
    assert text.startswith(head) and tail in text
    return text[len(head) : text.index(tail)].replace("[Masked Holding]", "<HOLDING>").strip()


def test_gold_is_the_index_of_the_answer_text(ctx):
    rows = raw_rows()
    items = TASK.load("train", ctx()) + TASK.load("test", ctx())
    assert len(items) == len(rows) == 40
    for it in items:
        row = rows[int(it.id.rsplit("/", 1)[1])]
        assert it.gold == row["choices"].index(row["answer"])
        assert it.choices[it.gold] == row["answer"].strip() and it.completion == "ABCDE"[it.gold]
    assert len({it.gold for it in items}) >= 4  # not always the same letter


def test_prompt_is_the_excerpt_then_five_holdings(ctx):
    rows = raw_rows()
    items = TASK.load("train", ctx()) + TASK.load("test", ctx())
    for it in items:
        row = rows[int(it.id.rsplit("/", 1)[1])]
        options = "".join(
            f"\n{letter}. {c.strip()}" for letter, c in zip("ABCDE", row["choices"], strict=True)
        )
        assert it.prompt == f"{excerpt(row)}{options}\nAnswer:"
        assert "[Masked Holding]" not in it.prompt and "Given the following" not in it.prompt
    # a real quirk: in 16 of the 1,000 sample rows (1 of the fixture's 40) the excerpt was
    # cut before the masked citation, so it holds no placeholder at all
    assert sum("<HOLDING>" not in it.prompt for it in items) == 1


def test_carved_split(ctx):
    train, test = TASK.load("train", ctx()), TASK.load("test", ctx())
    assert len(train) + len(test) == 40 and test
    assert sorted(it.id for it in train + test) == sorted(f"legalmcq/sample/{i}" for i in range(40))
    check_no_overlap("legalmcq", train, "legalmcq", test)
    shot = TASK.load("test", ctx(shots=1))
    assert shot[0].prompt == f"{train[0].prompt} {train[0].completion}\n\n{test[0].prompt}"


def test_hub_gives_the_same_items(ctx, fake_hub):
    """Fixture rows in lex_glue's schema (context, endings, label) as the hub's test split."""
    hub = [
        {"context": excerpt(r), "endings": r["choices"], "label": r["choices"].index(r["answer"])}
        for r in raw_rows()
    ]
    fake_hub({("coastalcph/lex_glue", "case_hold", "test"): hub})
    hub_items = TASK.load("test", ctx(source="hub", dir=None))
    assert [it.id for it in hub_items] == [f"legalmcq/test/{i}" for i in range(40)]
    files = TASK.load("train", ctx()) + TASK.load("test", ctx())

    def key(it):
        return int(it.id.rsplit("/", 1)[1])

    assert [replace(it, id="") for it in hub_items] == [
        replace(it, id="") for it in sorted(files, key=key)
    ]


def write(tmp_path, rows: list) -> str:
    folder = tmp_path / "legalmcq"
    folder.mkdir(exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (folder / "case_hold_test_sample1000.jsonl").write_text("\n".join(lines) + "\n")
    return str(folder / "case_hold_test_sample1000.jsonl")


GOOD = raw_rows()[0]


@pytest.mark.parametrize(
    "bad, why",
    [
        ({**GOOD, "answer": "holding nothing at all"}, "occurs 0 times in 'choices'"),
        ({**GOOD, "choices": [GOOD["answer"]] * 2 + GOOD["choices"][2:]}, "occurs 2 times"),
        ({**GOOD, "choices": GOOD["choices"][:4]}, "field 'choices' must hold 5 holdings"),
        (
            {**GOOD, "input_text": "Read this: " + GOOD["input_text"]},
            "does not follow the CaseHOLD",
        ),
        ({k: v for k, v in GOOD.items() if k != "answer"}, "missing field 'answer'"),
    ],
)
def test_bad_rows_name_file_and_line(ctx, tmp_path, bad, why):
    path = write(tmp_path, [GOOD, bad])
    with pytest.raises(DataError, match=re.escape(f"{path}:2: ") + ".*" + why):
        TASK.load("train", ctx(dir=str(tmp_path)))
    with pytest.warns(UserWarning, match="skipped 1 malformed row"):
        items = TASK.load("train", ctx(dir=str(tmp_path), on_bad_row="skip", holdout_fraction=0.01))
    assert [it.id for it in items] == ["legalmcq/sample/0"]


def test_hub_label_out_of_range(ctx, fake_hub):
    row = {"context": "c <HOLDING>", "endings": ["a", "b", "c", "d", "e"], "label": 5}
    fake_hub({("coastalcph/lex_glue", "case_hold", "train"): [row]})
    with pytest.raises(DataError, match=r"case_hold\[train\] row 0: field 'label' must be 0-4"):
        TASK.load("train", ctx(source="hub", dir=None))
