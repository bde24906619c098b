"""MathQA: both option encodings, options holding " , ", rationale targets, dev/test files."""

from __future__ import annotations

import ast
import json

import pytest
from task_helpers import FIXTURES

from rankscope.errors import DataError
from rankscope.tasks import TASKS
from rankscope.tasks.base import check_no_overlap
from rankscope.tasks.mathqa import parse_options
from rankscope.tasks.sources import RowError

TASK = TASKS["mathqa"]


def raw_rows(name: str) -> list[dict]:
    return json.loads((FIXTURES / "mathqa" / f"{name}.json").read_text())


def test_every_fixture_row_has_five_options(ctx):
    train, test = TASK.load("train", ctx()), TASK.load("test", ctx())
    assert len(train) == 45 and len(test) == 35
    assert all(
        len(it.choices) == 5 and it.prompt.endswith("\nE. " + it.choices[4] + "\nAnswer:")
        for it in train + test
    )
    check_no_overlap("mathqa", train, "mathqa", test)
    assert train[0].id == "mathqa/dev/0" and test[0].id == "mathqa/test/0"
    rows = raw_rows("dev")
    assert [it.gold for it in train] == ["abcde".index(r["correct"]) for r in rows]


def test_list_variant_options(ctx):
    rows = [r for r in raw_rows("dev") + raw_rows("test") if r["options"].startswith("[")]
    assert len(rows) == 6
    items = TASK.load("train", ctx()) + TASK.load("test", ctx())
    by_problem = {it.prompt.split("\nA. ")[0]: it for it in items}
    for r in rows:
        expected = tuple(o.split(" ) ", 1)[1] for o in ast.literal_eval(r["options"]))
        it = by_problem[r["Problem"].strip()]
        assert it.choices == expected and it.gold == "abcde".index(r["correct"])
    assert by_problem[rows[0]["Problem"].strip()].choices[1] == "4 \u03c0"


def test_options_containing_the_separator(ctx):
    rows = [r for r in raw_rows("dev") + raw_rows("test") if not r["options"].startswith("[")]
    tricky = [r for r in rows if r["options"].count(" , ") > 4]
    assert len(tricky) >= 2
    for r in tricky:
        opts = parse_options(r["options"])
        assert len(opts) == 5 and any(" , " in o for o in opts)
    assert parse_options("a ) 48 seconds , b ) 1 minute , 12 seconds , c ) 2 , d ) 3 , e ) 4") == [
        "48 seconds",
        "1 minute , 12 seconds",
        "2",
        "3",
        "4",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "a ) 1 , b ) 2 , c ) 3 , d ) 4",
        "a ) 1 , b ) 2 , c ) 3 , d ) 4 , e ) 5 , f ) 6",
        "x a ) 1 , b ) 2 , c ) 3 , d ) 4 , e ) 5",
        "['a ) 1', 'b ) 2', 'c ) 3', 'd ) 4']",
        "['a ) 1', 'b ) 2', 'c ) 3', 'e ) 4', 'd ) 5']",
        "['a ) 1', 'b ) 2'",
    ],
)
def test_options_that_are_not_five(text):
    with pytest.raises(RowError, match="options"):
        parse_options(text)


def test_rationale_target_reasons_first_then_gives_the_letter(ctx):
    """The rationale comes before the answer letter, so training teaches the model to reason
    toward its answer (old: the letter first, the rationale after it, too late to help)."""
    rows = raw_rows("dev")
    rationale = TASK.load("train", ctx())
    letter = TASK.load("train", ctx(mathqa_target="letter"))
    assert [it.completion for it in letter] == [r["correct"].upper() for r in rows]
    first = rationale[0]
    assert first.completion.startswith("5 choices for each of the 4 questions")
    assert first.completion.endswith("answer : c .\nAnswer: C")  # the outer quotes are dropped
    unquoted = rationale[1].completion
    assert unquoted == rows[1]["Rationale"] + "\nAnswer: B"
    for it in rationale:  # the gold letter is the completion's last word, after the reasoning
        body, answer = it.completion.rsplit("\nAnswer: ", 1)
        assert answer == "ABCDE"[it.gold] and len(body) > 20
    assert [it.prompt for it in rationale] == [it.prompt for it in letter]


def test_few_shot_exemplars_show_the_letter_only(ctx):
    train = TASK.load("train", ctx())
    test = TASK.load("test", ctx(shots=2))
    head = "".join(f"{it.prompt} {'ABCDE'[it.gold]}\n\n" for it in train[:2])
    assert all(it.prompt.startswith(head) for it in test)
    assert "Rationale" not in test[0].prompt


def _lm_eval_mathqa(lm_eval_task, **overrides):
    splits = {"train": raw_rows("dev"), "test": raw_rows("test")}
    return lm_eval_task("mathqa/mathqa.yaml", splits, **overrides)


def _misparsed_by_lm_eval(row: dict) -> bool:
    """Rows lm-eval's option regex gets wrong: list-encoded, or an option holding ' , '."""
    return row["options"].startswith("[") or row["options"].count(" , ") > 4


def test_acc_norm_prompt_and_continuations_are_lm_evals(ctx, lm_eval_task):
    """acc_norm scores lm-eval's mathqa: its doc_to_text (no lettered options) and, after its
    target delimiter, the option texts; only where its regex misparses the options (a stray
    quote kept, an option cut at ' , ') are ours different, and correct."""
    task = _lm_eval_mathqa(lm_eval_task)
    items, docs = TASK.load("test", ctx()), list(task.test_docs())
    assert len(items) == len(docs) == 35
    misparsed = 0
    for it, doc in zip(items, docs, strict=True):
        assert it.norm_prompt == task.doc_to_text(doc) == f"Question: {doc['Problem']}\nAnswer:"
        assert it.norm_choices == () and it.gold == task.doc_to_target(doc)
        ours = [" " + c for c in it.choices]  # what evaluate scores: norm_choices or choices
        theirs = [task.config.target_delimiter + c for c in task.doc_to_choice(doc)]
        if _misparsed_by_lm_eval(doc):
            misparsed += 1
            assert ours != theirs and it.choices == tuple(parse_options(doc["options"]))
        else:
            assert ours == theirs, it.id
    assert misparsed == 5
    assert "\nA. " in items[0].prompt  # acc keeps the lettered prompt


@pytest.mark.parametrize("shots", [0, 2])
def test_acc_norm_exemplars_are_lm_evals(ctx, lm_eval_task, shots):
    """With data.shots, the acc_norm prompt gets lm-eval's exemplars (its first_n sampler):
    question, ' ' + gold option text, a blank line; the letter prompt keeps its own."""
    task = _lm_eval_mathqa(lm_eval_task, fewshot_config={"sampler": "first_n"})
    items = TASK.load("test", ctx(shots=shots))
    theirs = [task.fewshot_context(doc, shots) for doc in task.test_docs()]
    assert [it.norm_prompt for it in items] == theirs
    assert all(it.prompt.count("\nAnswer:") == shots + 1 for it in items)


def test_hub_falls_back_to_the_parquet_mirror(ctx, fake_hub):
    script = RuntimeError("Dataset scripts are no longer supported, but found math_qa.py")
    calls = fake_hub(
        {
            ("allenai/math_qa", None, "train"): script,
            ("allenai/math_qa", None, "test"): script,
            ("regisss/math_qa", None, "train"): raw_rows("dev"),
            ("regisss/math_qa", None, "test"): raw_rows("test"),
        }
    )
    hub_test = TASK.load("test", ctx(source="hub", dir=None))
    assert hub_test == TASK.load("test", ctx())
    hub_train = TASK.load("train", ctx(source="hub", dir=None))
    assert [(it.prompt, it.completion) for it in hub_train] == [
        (it.prompt, it.completion) for it in TASK.load("train", ctx())
    ]
    assert calls[:2] == [("allenai/math_qa", None, "test"), ("regisss/math_qa", None, "test")]


def test_hub_down_names_both_ids(ctx, fake_hub):
    fake_hub({})
    with pytest.raises(DataError, match="allenai/math_qa .*regisss/math_qa.*data.source: files"):
        TASK.load("test", ctx(source="hub", dir=None))


def write(tmp_path, rows: list[dict]) -> str:
    (tmp_path / "mathqa").mkdir(exist_ok=True)
    path = tmp_path / "mathqa" / "test.json"
    path.write_text(json.dumps(rows, indent=1))
    return str(path)


GOOD = raw_rows("test")[0]


@pytest.mark.parametrize(
    "bad, why",
    [
        ({**GOOD, "options": "a ) 1 , b ) 2 , c ) 3 , d ) 4"}, "do not parse into exactly five"),
        ({**GOOD, "correct": "f"}, "field 'correct' must be one of a-e, got 'f'"),
        ({k: v for k, v in GOOD.items() if k != "Problem"}, "missing field 'Problem'"),
        ("not an object", "expected a JSON object"),
    ],
)
def test_bad_rows_name_file_and_line(ctx, tmp_path, bad, why):
    path = write(tmp_path, [GOOD, bad])
    with pytest.raises(DataError, match=why) as e:
        TASK.load("test", ctx(dir=str(tmp_path)))
    # indent=1: the second element starts after the first one's 9 lines and the '['
    assert str(e.value).startswith(f"{path}:{2 + len(GOOD) + 2}: ")
    with pytest.warns(UserWarning, match="skipped 1 malformed row"):
        assert len(TASK.load("test", ctx(dir=str(tmp_path), on_bad_row="skip"))) == 1


def test_malformed_json_file_cannot_be_skipped(ctx, tmp_path):
    path = tmp_path / "mathqa" / "test.json"
    path.parent.mkdir()
    path.write_text('[\n {"Problem": "x",\n  "options": oops}\n]')
    with pytest.raises(DataError, match=f"{path}:3: malformed JSON"):
        TASK.load("test", ctx(dir=str(tmp_path), on_bad_row="skip"))
