"""Subsets (`tasks.max_eval_items`, `tasks.max_train_items`) are seeded random samples,
stratified by subject (issue 14): the first N rows were whole files, so 150 MMLU test items
were two subjects. Real MMLU fixture data: 6 subjects, 12 test rows each (50 for
college_medicine), read in file order."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import pytest

from rankscope.config import load_config
from rankscope.sweep import Sweep, task_context
from rankscope.tasks import TASKS
from rankscope.tasks.base import allocate, subset

FIXTURES = Path(__file__).parent / "fixtures" / "data"
SUBJECTS = (
    "abstract_algebra",
    "anatomy",
    "college_medicine",
    "high_school_geography",
    "marketing",
    "professional_law",
)


def _cfg(*extra: str):
    with warnings.catch_warnings():  # "only 6 of 57 MMLU subjects found"
        warnings.simplefilter("ignore")
        return load_config(
            None,
            [
                "model.name=tiny-real",
                "data.source=files",
                f"data.dir={FIXTURES}",
                "tasks.train=[gsm8k]",
                "tasks.eval=[gsm8k, mmlu]",
                "tasks.retention=mmlu",
                f"data.mmlu_subjects=[{', '.join(SUBJECTS)}]",
                *extra,
            ],
        )


def _within_one_of_proportional(picked: list, whole: list, n: int) -> None:
    have, sizes = Counter(it.group for it in picked), Counter(it.group for it in whole)
    assert len(picked) == n and set(have) == set(sizes)
    for group, size in sizes.items():
        assert abs(have[group] - n * size / len(whole)) < 1, (group, have[group])


def test_an_eval_subset_spans_the_subjects_in_proportion():
    """The old first 30 rows: 12 abstract_algebra, 12 anatomy, 6 college_medicine."""
    sweep = Sweep(_cfg("tasks.max_eval_items=30"))
    whole = TASKS["mmlu"].items("test", sweep.ctx)
    assert len(whole) == 110 and [it.group for it in whole[:30]].count("anatomy") == 12
    picked = sweep.items("mmlu", "test")
    _within_one_of_proportional(picked, whole, 30)
    assert Counter(it.group for it in picked)["college_medicine"] == 14  # 13.6: largest remainder
    assert picked == [it for it in whole if it in picked]  # in the items' own order
    # the estimate and every other `Task.items(limit)` caller draw the same sample
    assert TASKS["mmlu"].items("test", task_context(sweep.cfg), 30) == picked


def test_every_subject_gets_one_when_there_is_room():
    sweep = Sweep(_cfg("tasks.max_eval_items=6"))
    assert sorted(it.group for it in sweep.items("mmlu", "test")) == sorted(SUBJECTS)


def test_a_training_subset_keeps_the_subjects_proportions():
    """MMLU trained on three subjects (74 rows, 50 of them college_medicine, read first):
    a subset of 20 was all college_medicine."""
    cfg = _cfg(
        "tasks.train=[mmlu]",
        "tasks.eval=[mmlu]",
        "data.mmlu_subjects=[abstract_algebra]",
        "data.mmlu_train_subjects=[college_medicine, high_school_geography, marketing]",
        "tasks.max_train_items=20",
    )
    sweep = Sweep(cfg)
    whole = TASKS["mmlu"].items("train", sweep.ctx)
    picked = sweep.items("mmlu", "train")
    _within_one_of_proportional(picked, whole, 20)


def test_the_sample_is_the_same_every_time_and_on_every_machine(tmp_path):
    """Seeded by a hash of each item's id (never Python's salted `hash()`): another process
    with another hash seed draws the same items, in the same order."""
    ids = [it.id for it in Sweep(_cfg("tasks.max_eval_items=30")).items("mmlu", "test")]
    assert ids == [it.id for it in Sweep(_cfg("tasks.max_eval_items=30")).items("mmlu", "test")]
    code = (
        "import sys, warnings; warnings.simplefilter('ignore')\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from test_subsets import _cfg\n"
        "from rankscope.sweep import Sweep\n"
        "s = Sweep(_cfg('tasks.max_eval_items=30'))\n"
        "print(' '.join(it.id for it in s.items('mmlu', 'test')))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    here = str(Path(__file__).parent)
    res = subprocess.run(
        [sys.executable, "-c", code, here], env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ids


def test_ungrouped_items_are_a_plain_seeded_sample():
    """GSM8K has no subjects: a seeded random 10 of its training rows, not the first 10."""
    sweep = Sweep(_cfg("tasks.max_train_items=10"))
    items = TASKS["gsm8k"].items("train", sweep.ctx)
    picked = subset(items, 10)
    assert len(picked) == 10 and picked != items[:10]
    assert picked == [it for it in items if it in picked] == subset(items[::-1], 10)[::-1]
    assert subset(items, None) == items == subset(items, len(items) + 5)


@pytest.mark.parametrize(
    ("sizes", "n", "want"),
    [
        # Hamilton: floors 52, 70, 26, 1 leave one seat, to the largest remainder (d: .56)
        ({"a": 100, "b": 135, "c": 50, "d": 3}, 150, {"a": 52, "b": 70, "c": 26, "d": 2}),
        # at least one each when there is room, taken from the group furthest over its quota
        ({"a": 1, "b": 1, "c": 1000}, 3, {"a": 1, "b": 1, "c": 1}),
        ({"a": 1, "b": 1, "c": 1000}, 2, {"a": 0, "b": 0, "c": 2}),
        ({"": 10}, 4, {"": 4}),
        ({"a": 3, "b": 2}, 9, {"a": 3, "b": 2}),
    ],
)
def test_allocation_by_largest_remainders(sizes, n, want):
    assert allocate(sizes, n) == want
