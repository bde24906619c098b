"""Train/eval decontamination (issue 14): near-duplicates of eval items are found by GPT-3's
13-gram rule and dropped from training, counted per (train task, eval task); the sweep goes
on. Real fixture data throughout: rows copied between files the way leaks happen."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

from rankscope.config import load_config
from rankscope.decontam import (
    decontaminate,
    index_eval,
    question_text,
    read_decontamination,
    words,
)
from rankscope.sweep import Sweep, read_sweep_file, write_sweep_file, zero_shot
from rankscope.tasks import TASKS
from rankscope.tasks.base import norm_hash
from rankscope.tasks.mcq import mcq_item
from rankscope.tasks.mmlu import description

FIXTURES = Path(__file__).parent / "fixtures" / "data"
MMLU_ALL = (
    "[abstract_algebra, anatomy, college_medicine, high_school_geography, marketing, "
    "professional_law]"
)


def _real(data: Path, *extra: str):
    with warnings.catch_warnings():  # "only 6 of 57 MMLU subjects found"
        warnings.simplefilter("ignore")
        return load_config(
            None,
            [
                "model.name=tiny-real",
                "data.source=files",
                f"data.dir={data}",
                "tasks.train=[gsm8k]",
                "tasks.eval=[gsm8k, mmlu]",
                "tasks.retention=mmlu",
                *extra,
            ],
        )


def _sweep(cfg) -> Sweep:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sweep = Sweep(cfg)
        sweep.check_leaks()
    return sweep


def _gsm8k_with_leaks(tmp_path: Path) -> tuple[Path, str, str]:
    """A copy of the fixtures whose gsm8k test file also holds two training problems: one
    verbatim, one with a word changed. Returns (data dir, their training item ids)."""
    data = tmp_path / "data"
    shutil.copytree(FIXTURES, data)
    pool = [it.id for it in _sweep(_real(data)).items("gsm8k", "train")]
    exact_id, near_id = pool[3], pool[5]  # training items, not carved off to validation
    rows = (data / "gsm8k" / "train.jsonl").read_text().splitlines()
    near = json.loads(rows[int(near_id.rsplit("/", 1)[1])])
    head, last = near["question"].rsplit(" ", 1)
    assert len(words(head)) > 20
    near["question"] = f"{head} in total?"  # its last word replaced
    assert words(near["question"]) != words(f"{head} {last}")
    test = data / "gsm8k" / "test.jsonl"
    exact = rows[int(exact_id.rsplit("/", 1)[1])]
    test.write_text(test.read_text() + exact + "\n" + json.dumps(near) + "\n")
    return data, exact_id, near_id


def test_a_leaked_training_problem_is_dropped_and_counted_not_refused(tmp_path):
    """Used to stop the sweep ('train/eval overlap'); a changed word went unseen."""
    data, exact_id, near_id = _gsm8k_with_leaks(tmp_path)
    cfg = _real(data, f"output_dir={tmp_path / 'out'}")
    sweep = _sweep(cfg)  # no DataError
    train = [it.id for it in sweep.items("gsm8k", "train")]
    assert exact_id not in train and near_id not in train
    n_test = len(sweep.items("gsm8k", "test"))
    assert n_test == 33 + 2  # eval items are never dropped
    result = sweep.check_leaks()
    gsm = next(o for o in result.overlaps if o.eval_task == "gsm8k")
    assert gsm.dropped == 2 and {a for a, _ in gsm.examples} == {exact_id, near_id}
    assert {b for _, b in gsm.examples} == {f"gsm8k/test/{n_test - 2}", f"gsm8k/test/{n_test - 1}"}
    assert result.kept["gsm8k"] == gsm.train_items - 2 == len(train)
    assert next(o for o in result.overlaps if o.eval_task == "mmlu").dropped == 0
    path = sweep.write_decontamination()
    assert path == tmp_path / "out" / "decontamination.json"
    back = read_decontamination(tmp_path / "out")
    assert back == result and back.dropped("gsm8k") == 2
    assert read_decontamination(tmp_path / "nothing-here") is None


def test_workers_drop_the_same_items(tmp_path):
    """A worker rebuilds the Sweep from sweep.yaml in its own process (another hash seed):
    it must train on exactly the driver's items."""
    data, _, _ = _gsm8k_with_leaks(tmp_path)
    out = tmp_path / "out"
    cfg = _real(data, f"output_dir={out}", "tasks.max_train_items=12")
    write_sweep_file(cfg, out)
    here = [it.id for it in _sweep(read_sweep_file(out)).items("gsm8k", "train")]
    code = (
        "import sys, warnings; warnings.simplefilter('ignore')\n"
        "from rankscope.sweep import Sweep, read_sweep_file\n"
        "s = Sweep(read_sweep_file(sys.argv[1]))\n"
        "print(' '.join(it.id for it in s.items('gsm8k', 'train')))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    res = subprocess.run(
        [sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == here and len(here) == 12


def _mmlu_row(subject: str, index: int) -> list[str]:
    path = FIXTURES / "mmlu" / "test" / f"{subject}_test.csv"
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))[index]


def test_the_same_question_under_another_subject_is_caught(tmp_path):
    """MMLU trained on one subject, evaluated on another: a question filed under both (with
    its own subject's description) leaves training."""
    data = tmp_path / "data"
    shutil.copytree(FIXTURES, data)
    row = _mmlu_row("abstract_algebra", 4)
    target = data / "mmlu" / "test" / "marketing_test.csv"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(row)
    target.write_text(target.read_text(encoding="utf-8") + buf.getvalue(), encoding="utf-8")
    cfg = _real(
        data,
        "tasks.train=[mmlu]",
        "tasks.eval=[mmlu]",
        "data.mmlu_subjects=[abstract_algebra]",
        "data.mmlu_train_subjects=[marketing]",
    )
    sweep = _sweep(cfg)
    train = sweep.items("mmlu", "train")
    assert len(train) == 12 and all(it.group == "marketing" for it in train)
    (overlap,) = sweep.check_leaks().overlaps
    assert overlap.dropped == 1 and overlap.examples == [
        ("mmlu/marketing/test/12", "mmlu/abstract_algebra/test/4")
    ]


def test_shuffled_options_and_another_head_still_match():
    """Options reordered (and another subject's description in front): the question alone is
    compared, so the copy is caught; the old hash of the whole prompt missed it."""
    question, *choices, letter = _mmlu_row("high_school_geography", 7)
    sweep = _sweep(_real(FIXTURES, f"data.mmlu_subjects={MMLU_ALL}"))
    evals = sweep.items("mmlu", "test")
    target = next(it for it in evals if it.id == "mmlu/high_school_geography/test/7")
    order = [2, 0, 3, 1]
    shuffled = [choices[i] for i in order]
    gold = order.index("ABCD".index(letter))
    copy = mcq_item("copy/0", question.strip(), shuffled, gold, head=description("marketing"))
    assert copy.prompt != target.prompt and norm_hash(copy.prompt) != norm_hash(target.prompt)
    kept, (overlap,) = decontaminate("copy", [copy], {"mmlu": index_eval(evals)})
    assert kept == [] and overlap.examples == [("copy/0", target.id)]


def test_an_instruction_every_item_carries_is_not_an_overlap():
    """Boilerplate: an instruction of more than 13 words in every prompt of both sets is
    shared text, not a leak (its words are common to the items: no 13-gram of it counts)."""
    cfg = _real(FIXTURES)
    sweep = _sweep(cfg)
    lead = (
        "Solve the following grade school math problem step by step, then write the final "
        "answer as a number after four hash marks. "
    )

    def instructed(items):
        return [
            dataclasses.replace(it, prompt=it.prompt.replace("Question: ", lead, 1)) for it in items
        ]

    train = sweep.items("gsm8k", "train")
    test = TASKS["gsm8k"].items("test", zero_shot(sweep.ctx))  # as decontamination sees them
    assert len(words(lead)) > 13 and all(lead in it.prompt for it in instructed(test))
    kept, (overlap,) = decontaminate(
        "gsm8k", instructed(train), {"gsm8k": index_eval(instructed(test))}
    )
    assert overlap.dropped == 0 and len(kept) == len(train)


def test_no_false_positives_on_the_fixture_data():
    """Every training task against every eval task of the real-data config: the one item
    dropped is a true near-duplicate in MathQA itself (the same problem with 800 sculptures
    in training and 1000 in test), a leak the exact hash missed."""
    cfg = _real(
        FIXTURES,
        "tasks.train=[gsm8k, mathqa, medmcqa, legalmcq]",
        "tasks.eval=[gsm8k, mathqa, mmlu, medmcqa, legalmcq]",
        "data.mmlu_subjects=[abstract_algebra, high_school_geography, marketing]",
    )
    result = _sweep(cfg).check_leaks()
    assert len(result.overlaps) == 4 * 5
    hits = [(o.train_task, o.eval_task, e) for o in result.overlaps for e in o.examples]
    assert hits == [("mathqa", "mathqa", ("mathqa/dev/8", "mathqa/test/25"))], hits
    ctx = _sweep(cfg).ctx
    train = {it.id: it for it in TASKS["mathqa"].items("train", ctx)}
    test = {it.id: it for it in TASKS["mathqa"].items("test", ctx)}
    a, b = (
        words(question_text(train["mathqa/dev/8"])),
        words(question_text(test["mathqa/test/25"])),
    )
    assert len(a) == len(b) and [(x, y) for x, y in zip(a, b, strict=True) if x != y] == [
        ("800", "1000")
    ]


def test_the_sweep_runs_on_and_records_what_it_dropped(tmp_path, cache_dir, small_model_dir):
    """A real (small) toy sweep trained on toy-mathmcq, whose training split repeats four test
    questions verbatim with their options reordered: the sweep finishes, the file says so."""
    from sweep_configs import small_sweep

    from rankscope.pipeline import run_sweep

    out = tmp_path / "sweep"
    cfg = small_sweep(
        out,
        cache_dir,
        "tasks.train=[toy-mathmcq]",
        "tasks.eval=[toy-mathmcq, toy-general]",
        "tasks.retention=toy-general",
        "methods.base=false",
        "methods.lora.enabled=false",
        "tasks.max_train_items=16",
        "tasks.max_eval_items=8",
        "train.epochs=1",
        "analysis.enabled=false",
    )
    outcome = run_sweep(cfg, report=False)
    assert outcome.done == ["toy-mathmcq__full-lr3e-3__s0"] and not outcome.failed
    result = read_decontamination(out)
    assert result is not None and result.kept == {"toy-mathmcq": 116}
    assert [(o.eval_task, o.dropped) for o in result.overlaps] == [
        ("toy-mathmcq", 4),
        ("toy-general", 0),
    ]
    assert json.loads((out / "decontamination.json").read_text())["rule"] == "13gram-v1"
    # the driver puts the same counts into the store, where the report reads them
    from rankscope.report import load_report_data
    from rankscope.report.content import decontamination_line

    line = decontamination_line(load_report_data(out / "results.sqlite"))
    assert line is not None and "4 of 120 toy-mathmcq training items overlap toy-mathmcq" in line
