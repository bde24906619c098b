"""The toy world's five tasks, mirroring the paper's datasets in kind.

toy-arith ~ GSM8K (generative, worked steps, '#### N'); toy-mathmcq ~ MathQA (5-option
arithmetic MCQ); toy-general ~ MMLU as the retention probe (facts the base model learned in
pretraining; test only); toy-med ~ MedMCQA (4 options) and toy-legal ~ CaseHOLD (5 options):
new kinds of questions, in their own option layout, whose answer is a known fact of the
subject (see `rankscope.world.generator`). Train and test ask about disjoint subjects, so no
test prompt occurs in training (checked) and a test score is transfer to unseen questions.
An MCQ's training completion is its answer letter alone, as in pretraining ('... answer : D')
and in the real MCQ tasks. A completion that goes on after the letter (the option's text, an
explanation) starts training at 15-18 nats per token, because the base model always ends
after the letter; relearning that format first decided, by seed, whether a run learned the
domain at all (docs/toy-world.md, "A fourth try").
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable

from rankscope.tasks.base import LETTERS, Item, Task, TaskContext, extract_hash_answer
from rankscope.world.generator import (
    World,
    WorldSpec,
    arith_problem,
    balanced_positions,
    domain_fact,
    fact_mcq,
    make_world,
    number_mcq,
    statement,
)


@functools.lru_cache(maxsize=4)
def _world(spec: WorldSpec) -> World:
    return make_world(spec)


def _spec(ctx: TaskContext) -> WorldSpec:
    return ctx.world_spec if ctx.world_spec is not None else WorldSpec()


def _rng(spec: WorldSpec, task: str, split: str) -> random.Random:
    return random.Random(f"{spec.seed}/{task}/{split}")


def _dedupe(items: list[Item], avoid: set[str]) -> list[Item]:
    out, seen = [], set(avoid)
    for it in items:
        if it.prompt not in seen:
            seen.add(it.prompt)
            out.append(it)
    return out


def _disjoint(split: str, make: Callable[[str], list[Item]]) -> list[Item]:
    """The train items; the val items minus any whose prompt occurs in training; the test
    items minus any whose prompt occurs in training or validation."""
    train = _dedupe(make("train"), set())
    if split == "train":
        return train
    val = _dedupe(make("val"), {it.prompt for it in train})
    if split == "val":
        return val
    return _dedupe(make("test"), {it.prompt for it in train + val})


def _size(spec: WorldSpec, task: str, split: str) -> int:
    """How many items a split of a toy task draws (before de-duplication)."""
    return getattr(spec, f"n_{task}_{split}")


def _load_arith(split: str, ctx: TaskContext) -> list[Item]:
    spec = _spec(ctx)

    def make(sp: str) -> list[Item]:
        rng = _rng(spec, "toy-arith", sp)
        items = []
        for i in range(_size(spec, "arith", sp)):
            prompt, completion, value = arith_problem(rng, spec, rng.choice((2, 3)))
            items.append(Item(f"toy-arith/{sp}/{i}", prompt, completion, answer=str(value)))
        return items

    return _disjoint(split, make)


def _load_mathmcq(split: str, ctx: TaskContext) -> list[Item]:
    spec = _spec(ctx)

    def make(sp: str) -> list[Item]:
        rng = _rng(spec, "toy-mathmcq", sp)
        items = []
        for i in range(_size(spec, "mathmcq", sp)):
            prompt, options, gold = number_mcq(rng, spec, rng.choice((2, 3)))
            items.append(Item(f"toy-mathmcq/{sp}/{i}", prompt, LETTERS[gold], tuple(options), gold))
        return items

    return _disjoint(split, make)


REPLAY_DRAWS_PER_FACT = 8
"""Draws per general fact of toy-general's training stream (`_general_replay`); a change
changes which items replay draws, so it must come with a new `identity.REPLAY_RULE`."""


def _general_loader(split: str, ctx: TaskContext, per_fact: int | None = None) -> list[Item]:
    """`general_items_per_fact` (or `per_fact`) fresh 4-option MCQs per general fact (the
    base model learned the facts): each a new draw of phrasing, distractors and order, the
    repeats of a fact with different prompts (a repeated prompt is drawn again)."""
    spec = _spec(ctx)
    world = _world(spec)
    rng = _rng(spec, "toy-general", split)
    items: list[Item] = []
    seen: set[str] = set()
    repeats = spec.general_items_per_fact if per_fact is None else per_fact
    facts = [f for _ in range(repeats) for f in world.general]
    for i, fact in enumerate(facts):
        prompt, options, gold = fact_mcq(world, fact, 4, rng, alt=rng.random() < 0.5)
        for _ in range(20):
            if prompt not in seen:
                break
            prompt, options, gold = fact_mcq(world, fact, 4, rng, alt=rng.random() < 0.5)
        seen.add(prompt)
        items.append(Item(f"toy-general/{split}/{i}", prompt, LETTERS[gold], tuple(options), gold))
    return items


def _general_replay(ctx: TaskContext) -> list[Item]:
    """toy-general's training stream, the general data `train.replay_fraction` mixes in: MCQs
    about the general facts drawn from the split 'train' (its own random stream, ids
    `toy-general/train/<i>`), `REPLAY_DRAWS_PER_FACT` per fact. The test split asks about
    every fact, so the sweep drops each of these whose question a test item asks
    (`rankscope.replay`): what is left rehearses the facts in the phrasings the test does
    not use, and the MCQ format."""
    return _general_loader("train", ctx, REPLAY_DRAWS_PER_FACT)


def _general_corpus(ctx: TaskContext) -> list[str]:
    """The general facts as the plain statements of the base model's pretraining text."""
    world = _world(_spec(ctx))
    return [statement(world, f) for f in world.general]


def _domain_loader(domain: str, task: str, n_options: int):
    def make(split: str, spec: WorldSpec) -> list[Item]:
        world = _world(spec)
        rng = _rng(spec, task, split)
        n = getattr(spec, f"n_{domain}_train") if split == "train" else _size(spec, "domain", split)
        items = []
        for i, at in enumerate(balanced_positions(n, n_options, rng)):
            fact = domain_fact(world, domain, split, rng)
            alt = rng.random() < 0.5
            prompt, options, gold = fact_mcq(world, fact, n_options, rng, alt=alt, gold=at)
            items.append(Item(f"{task}/{split}/{i}", prompt, LETTERS[gold], tuple(options), gold))
        return items

    def load(split: str, ctx: TaskContext) -> list[Item]:
        spec = _spec(ctx)
        return _disjoint(split, lambda sp: make(sp, spec))

    return load


TOY_TASKS = {
    "toy-arith": Task(
        "toy-arith",
        "gen",
        _load_arith,
        "multi-step arithmetic word problems with worked answers (like GSM8K)",
        splits=("train", "val", "test"),
        stop=("[EOS]", "question :"),
        extract=extract_hash_answer,
    ),
    "toy-mathmcq": Task(
        "toy-mathmcq",
        "mcq",
        _load_mathmcq,
        "arithmetic as 5-option MCQ (like MathQA)",
        splits=("train", "val", "test"),
    ),
    "toy-general": Task(
        "toy-general",
        "mcq",
        _general_loader,
        "general facts the base model learned in pretraining, 4-option MCQ "
        "(like MMLU; the retention probe)",
        splits=("test",),
        probe_texts=_general_corpus,
        replay=_general_replay,
    ),
    "toy-med": Task(
        "toy-med",
        "mcq",
        _domain_loader("med", "toy-med", 4),
        "a new medical fact domain, 4-option MCQ (like MedMCQA)",
        splits=("train", "val", "test"),
    ),
    "toy-legal": Task(
        "toy-legal",
        "mcq",
        _domain_loader("legal", "toy-legal", 5),
        "a new legal fact domain, 5-option MCQ (like CaseHOLD)",
        splits=("train", "val", "test"),
    ),
}
