"""The one multiple-choice layout of the real benchmarks, few-shot exemplars, holdout carving.

Layout (lm-evaluation-harness's MMLU `doc_to_text`, used for every MCQ benchmark):
`"{question}\\nA. {c0}\\nB. {c1}...\\nAnswer:"`; the evaluator scores " A", " B", ... right
after the prompt, and a few-shot exemplar is that block, " {letter}" and a blank line.

A benchmark whose lm-eval task scores `acc_norm` on another prompt (MathQA: the question
alone, the option texts as continuations) carries it as `Item.norm_prompt` / `norm_choices`;
its exemplars are then that prompt, " {gold continuation}" and a blank line, as lm-eval's.
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
    norm_prompt: str = "",
    norm_choices: Sequence[str] = (),
) -> Item:
    """An MCQ Item; `completion` defaults to the gold letter, `head` goes before the block;
    `norm_prompt` / `norm_choices`: lm-eval's own acc_norm prompt and continuations."""
    return Item(
        id=item_id,
        prompt=head + mcq_block(question, choices),
        completion=completion if completion is not None else LETTERS[gold],
        choices=tuple(choices),
        gold=gold,
        group=group,
        norm_prompt=norm_prompt,
        norm_choices=tuple(norm_choices),
    )


def exemplar(item: Item) -> str:
    """A solved example as it precedes an eval prompt: MCQ -> the letter, gen -> the answer."""
    answer = LETTERS[item.gold] if item.choices else item.completion
    return f"{item.prompt} {answer}\n\n"


def norm_exemplar(item: Item) -> str:
    """A solved example before an acc_norm prompt: lm-eval's prompt and gold continuation."""
    return f"{item.norm_prompt} {(item.norm_choices or item.choices)[item.gold]}\n\n"


def with_shots(
    items: list[Item], exemplars: Sequence[Item], k: int, where: str, key: str = "data.shots"
) -> list[Item]:
    """Prepend the first k exemplars to every item's prompt (k = the config field `key`),
    and to its acc_norm prompt where it has one."""
    if k <= 0:
        return items
    if len(exemplars) < k:
        raise ConfigError(
            f"{key}: {k} few-shot exemplars asked for, but {where} has only {len(exemplars)}"
        )
    prefix = "".join(exemplar(e) for e in exemplars[:k])
    norm = "".join(norm_exemplar(e) for e in exemplars[:k] if e.norm_prompt)
    return [
        replace(it, prompt=prefix + it.prompt, norm_prompt=it.norm_prompt and norm + it.norm_prompt)
        for it in items
    ]


def few_shot_loader(
    name: str, items: Callable[[str, TaskContext], list[Item]], shots_field: str = "shots"
) -> Callable[[str, TaskContext], list[Item]]:
    """load(split, ctx) of a task whose few-shot exemplars are its first k train items, k
    being the `data.<shots_field>` setting. Only test prompts get them: training prompts
    stay zero-shot, and an exemplar is a train item, never a test one."""

    def load(split: str, ctx: TaskContext) -> list[Item]:
        got = items(split, ctx)
        if not got:
            raise DataError(
                f"{name}: the {split} split is empty (data.holdout_fraction too extreme?)"
            )
        shots = getattr(data_config(ctx), shots_field)
        if split == "test" and shots:
            where, key = f"the {name} train split", f"data.{shots_field}"
            got = with_shots(got, items("train", ctx), shots, where, key)
        return got

    return load


def carve(split: str, rows: list[T], key: Callable[[T], str], fraction: float) -> list[T]:
    """The train or test part of one labelled file, by a stable hash of each row's text.

    Rows with the same (normalised) text always land on the same side, so duplicates in
    the file cannot leak from train into test.
    """
    want_test = split == "test"
    return [r for r in rows if in_holdout(key(r), fraction) == want_test]
