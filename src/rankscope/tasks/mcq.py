"""The one multiple-choice layout of the real benchmarks, few-shot exemplars, holdout carving.

Layout (lm-evaluation-harness's MMLU `doc_to_text`, used for every MCQ benchmark):
`"{question}\\nA. {c0}\\nB. {c1}...\\nAnswer:"`; the evaluator scores " A", " B", ... right
after the prompt, and a few-shot exemplar is that block, " {letter}" and a blank line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from rankscope.errors import ConfigError, DataError
from rankscope.tasks.base import LETTERS, Item, TaskContext
from rankscope.tasks.sources import data_config, in_holdout

T = TypeVar("T")


def mcq_block(question: str, choices: Sequence[str]) -> str:
    """Question, lettered options, 'Answer:' (no trailing space: the letter token has one)."""
    options = "".join(f"\n{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return f"{question}{options}\nAnswer:"


def mcq_item(
    item_id: str,
    question: str,
    choices: Sequence[str],
    gold: int,
    completion: str | None = None,
    group: str = "",
    head: str = "",
) -> Item:
    """An MCQ Item; `completion` defaults to the gold letter, `head` goes before the block."""
    return Item(
        id=item_id,
        prompt=head + mcq_block(question, choices),
        completion=completion if completion is not None else LETTERS[gold],
        choices=tuple(choices),
        gold=gold,
        group=group,
    )


def exemplar(item: Item) -> str:
    """A solved example as it precedes an eval prompt: MCQ -> the letter, gen -> the answer."""
    answer = LETTERS[item.gold] if item.choices else item.completion
    return f"{item.prompt} {answer}\n\n"


def with_shots(items: list[Item], exemplars: Sequence[Item], k: int, where: str) -> list[Item]:
    """Prepend the first k exemplars to every item's prompt (k = data.shots)."""
    if k <= 0:
        return items
    if len(exemplars) < k:
        raise ConfigError(
            f"data.shots: {k} few-shot exemplars asked for, but {where} has only {len(exemplars)}"
        )
    prefix = "".join(exemplar(e) for e in exemplars[:k])
    return [replace(it, prompt=prefix + it.prompt) for it in items]


def few_shot_loader(
    name: str, items: Callable[[str, TaskContext], list[Item]]
) -> Callable[[str, TaskContext], list[Item]]:
    """load(split, ctx) of a task whose few-shot exemplars are its first k train items."""

    def load(split: str, ctx: TaskContext) -> list[Item]:
        got = items(split, ctx)
        if not got:
            raise DataError(
                f"{name}: the {split} split is empty (data.holdout_fraction too extreme?)"
            )
        shots = data_config(ctx).shots
        if split == "test" and shots:
            got = with_shots(got, items("train", ctx), shots, f"the {name} train split")
        return got

    return load


def carve(split: str, rows: list[T], key: Callable[[T], str], fraction: float) -> list[T]:
    """The train or test part of one labelled file, by a stable hash of each row's text.

    Rows with the same (normalised) text always land on the same side, so duplicates in
    the file cannot leak from train into test.
    """
    want_test = split == "test"
    return [r for r in rows if in_holdout(key(r), fraction) == want_test]
