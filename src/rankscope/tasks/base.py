"""What a task is: items with a prompt and a completion, a kind (mcq | gen), and a loader.

`DataConfig` (the sweep's `data:` section) lives here, beside the `TaskContext` that carries
it to the loaders: the loaders need it and `rankscope.config` needs the task registry, so the
section sits below both and `config` re-exports it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rankscope.errors import DataError, require, require_one_of

LETTERS = "ABCDE"


@dataclass(frozen=True)
class Item:
    """One example. `prompt` ends where the model's answer starts."""

    id: str
    prompt: str
    completion: str
    """Training target (loss is on this only)."""
    choices: tuple[str, ...] = ()
    """MCQ option texts, in letter order (empty for generative items)."""
    gold: int = -1
    """MCQ: index of the correct option."""
    answer: str = ""
    """Generative: the gold final answer (normalised number as text)."""
    group: str = ""
    """Sub-group for per-group scores (an MMLU subject); empty = none."""
    norm_prompt: str = ""
    """MCQ `acc_norm`: the prompt of lm-eval's own task for this benchmark, whose choices are
    scored as continuations (no lettered options unless that task lists them); empty = use
    `prompt`. `acc` always scores the letter after `prompt`."""
    norm_choices: tuple[str, ...] = ()
    """MCQ `acc_norm`: the continuations (each scored after a space) of lm-eval's task, in
    letter order; empty = `choices`."""


@dataclass
class DataConfig:
    source: str = "hub"
    """Where real benchmarks come from: hub (datasets.load_dataset) | files (local copies)."""
    dir: str | None = None
    """Root of local benchmark files (layout: gsm8k/, mmlu/, medmcqa/, mathqa/, legalmcq/)."""
    on_bad_row: str = "stop"
    """A malformed data row: stop (error naming file:line) | skip (skip it, report a count)."""
    shots: int = 0
    """Few-shot exemplars prepended to every eval prompt (MMLU: the subject's dev rows;
    others: the first k train items); 0 = zero-shot. GSM8K has its own, `gsm8k_shots`."""
    gsm8k_shots: int = 5
    """Few-shot exemplars of GSM8K eval prompts: the first k train items with their worked
    answers (lm-eval's gsm8k is 5-shot). Zero-shot, a model not trained on GSM8K rarely writes
    '#### N', so strict match measures the format; 0 = zero-shot."""
    chat_template: bool = False
    """Wrap prompts in the tokenizer's chat template (instruct models)."""
    mmlu_subjects: list[str] = field(default_factory=list)
    """MMLU subjects or categories (stem, humanities, social_sciences, other) to evaluate on;
    empty = every subject no training task of the sweep covers (neither trained on nor in a
    training task's domain, `Task.mmlu_domain`)."""
    mmlu_train_subjects: list[str] = field(default_factory=list)
    """MMLU subjects or categories to train on when mmlu is a training task (must not
    overlap the evaluated subjects)."""
    mathqa_target: str = "rationale"
    """MathQA training completion: rationale (the worked rationale, then 'Answer: <letter>',
    so the model learns to reason before it answers) | letter (the gold letter only). Eval
    scores the letter right after the prompt either way."""
    holdout_fraction: float = 0.2
    """When only one labelled split exists on disk, this fraction (by a stable hash of the
    item) is the test split and the rest the train split."""
    val_fraction: float = 0.1
    """A task without a validation split of its own gives this fraction of its training
    items (by a stable hash of the item id) to validation, where learning rates are chosen;
    they are then not trained on. Toy tasks and MMLU have their own validation split."""

    def __post_init__(self) -> None:
        """Refuse a bad value when the section is built, naming the field (`data.shots`)."""
        require_one_of("data.source", self.source, ("hub", "files"), hint=True)
        require_one_of("data.on_bad_row", self.on_bad_row, ("stop", "skip"), hint=True)
        require_one_of("data.mathqa_target", self.mathqa_target, ("rationale", "letter"), hint=True)
        require(self.shots >= 0, f"data.shots: must be >= 0, got {self.shots}")
        require(self.gsm8k_shots >= 0, f"data.gsm8k_shots: must be >= 0, got {self.gsm8k_shots}")
        require(0 < self.holdout_fraction < 1, "data.holdout_fraction: must be in (0, 1)")
        require(0 < self.val_fraction < 1, "data.val_fraction: must be in (0, 1)")


@dataclass
class TaskContext:
    """What a loader may need: the toy world spec, the data config, the sweep's tasks."""

    world_spec: Any = None
    data: DataConfig | None = None
    """The sweep's `DataConfig` (source, dir, on_bad_row, shots, subjects ...)."""
    train_tasks: tuple[str, ...] = ()
    """Every training task of the sweep (a task may pick its eval subset from this)."""
    options: dict[str, Any] = field(default_factory=dict)


MMLU_DOMAINS: dict[str, tuple[str, ...]] = {}
"""Task name -> its `Task.mmlu_domain`, filled as each task is defined, so MMLU reads the
domains without importing the registry that imports it."""


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # "mcq" | "gen"
    load: Callable[[str, TaskContext], list[Item]]
    """load(split, ctx) for split in `splits`."""
    description: str = ""
    splits: tuple[str, ...] = ("train", "test")
    """'val' among them: the task has a validation split of its own; otherwise the sweep
    carves one from 'train' (`carve_val`)."""
    stop: tuple[str, ...] = ()
    """Generation stop strings (gen tasks)."""
    extract: Callable[[str], dict[str, str | None]] | None = None
    """Generation -> {'strict': answer|None, 'flexible': answer|None} (gen tasks)."""
    probe_texts: Callable[[TaskContext], list[str]] | None = None
    """General text of the task's kind for the KL(base ‖ tuned) retention measure (the toy
    world's general corpus); None: the prompts of its test items."""
    mmlu_domain: tuple[str, ...] = ()
    """The MMLU subjects of this task's own domain. Training on the task is in-domain for
    them, so they are left out of the retention probe of any sweep that trains on it."""
    replay: Callable[[TaskContext], list[Item]] | None = None
    """The general-domain training items `train.replay_fraction` mixes in when this task is
    the retention task: questions of its kind that are in none of its test or validation
    sets; None: it offers none (replay is then refused)."""

    def __post_init__(self) -> None:
        if self.mmlu_domain:
            MMLU_DOMAINS[self.name] = self.mmlu_domain

    def items(self, split: str, ctx: TaskContext, limit: int | None = None) -> list[Item]:
        if split not in self.splits:
            raise DataError(
                f"task {self.name!r} has no {split!r} split (it has: {', '.join(self.splits)})"
            )
        return subset(self.load(split, ctx), limit)


def in_val(item: Item, fraction: float) -> bool:
    """Whether a training item goes to the carved validation split: a stable hash of its id,
    so the split is the same on every machine and does not move when items are added."""
    h = int(hashlib.sha1(f"val/{item.id}".encode()).hexdigest()[:8], 16)
    return h < fraction * 0x100000000


def carve_val(items: list[Item], fraction: float) -> tuple[list[Item], list[Item]]:
    """(train, val): the training items split by `in_val`."""
    return [it for it in items if not in_val(it, fraction)], [
        it for it in items if in_val(it, fraction)
    ]


SUBSET_RULE = "stratified-seeded-v1"
"""How `subset` draws (named in run identities: a change to the rule must change it)."""


def _subset_key(item: Item) -> str:
    """The item's place in the seeded order: a hash of its id, so the order is the same on
    every machine and an item keeps its place when others are added."""
    return hashlib.sha1(f"subset-v1/{item.id}".encode()).hexdigest()


def allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """How many of `n` items each group gives: proportional to its size, the seats left by
    rounding down going to the largest remainders (Hamilton's method); when `n` is at least
    the number of groups, every group gives at least one. Ties go to the group named first."""
    total = sum(sizes.values())
    if n >= total:
        return dict(sizes)
    # remainders as integers (n * size - alloc * total) keep the comparison exact
    alloc = {g: n * s // total for g, s in sizes.items()}
    if n >= len(sizes):
        alloc = {g: max(1, a) for g, a in alloc.items()}
    order = sorted(sizes)
    while sum(alloc.values()) < n:
        room = [g for g in order if alloc[g] < sizes[g]]
        best = max(room, key=lambda g: (n * sizes[g] - alloc[g] * total, -order.index(g)))
        alloc[best] += 1
    while sum(alloc.values()) > n:  # only after the at-least-one rule
        over = [g for g in order if alloc[g] > 1]
        worst = min(over, key=lambda g: (n * sizes[g] - alloc[g] * total, order.index(g)))
        alloc[worst] -= 1
    return alloc


def subset(items: list[Item], n: int | None) -> list[Item]:
    """`n` of the items (all when `n` is None or not smaller), in their own order: a seeded
    random sample, stratified by `Item.group` (an MMLU subject) so a subset spans the groups
    in proportion. The first n would be whole files: 150 MMLU items, two subjects."""
    if not n or n >= len(items):
        return list(items)
    groups: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it.group, []).append(i)
    take = allocate({g: len(ix) for g, ix in groups.items()}, n)
    chosen: set[int] = set()
    for g, ix in groups.items():
        chosen.update(sorted(ix, key=lambda i: (_subset_key(items[i]), i))[: take[g]])
    return [it for i, it in enumerate(items) if i in chosen]


def norm_hash(text: str) -> str:
    """Hash of case/space/punctuation-normalised text, for leak checks."""
    norm = re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()
    return hashlib.sha1(norm.encode()).hexdigest()


def check_no_overlap(train_name: str, train: list[Item], eval_name: str, evals: list[Item]) -> None:
    """Refuse any eval item whose normalised prompt also occurs in training data: the
    loaders' own guarantee for their splits. A sweep does not refuse: it drops near-duplicates
    from training (`rankscope.decontam`)."""
    seen = {norm_hash(it.prompt): it.id for it in train}
    leaks = [(seen[h], it.id) for it in evals if (h := norm_hash(it.prompt)) in seen]
    if leaks:
        shown = ", ".join(f"{a} = {b}" for a, b in leaks[:5])
        raise DataError(
            f"train/eval overlap: {len(leaks)} item(s) of eval task {eval_name!r} "
            f"also occur in training task {train_name!r}: {shown}"
            f"{' ...' if len(leaks) > 5 else ''}"
        )


_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def normalize_number(text: str) -> str:
    """'$1,080.00' -> '1080'; '7.50' -> '7.5'."""
    t = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        val = float(t)
    except ValueError:
        return t
    return str(int(val)) if val == int(val) else str(val)


def extract_hash_answer(text: str) -> dict[str, str | None]:
    """Strict: the number after the last '####'; flexible: the last number in the text."""
    strict = None
    if "####" in text:
        m = _NUM.search(text.rsplit("####", 1)[1])
        strict = normalize_number(m.group(0)) if m else None
    nums = _NUM.findall(text)
    flexible = normalize_number(nums[-1]) if nums else None
    return {"strict": strict, "flexible": flexible}
