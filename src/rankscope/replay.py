"""Replay: general-domain items mixed into a run's training set (`train.replay_fraction`).

The standard mitigation of forgetting, measured beside the cheap alternative the paper
suggests (a lower rank without replay). A replay fraction f in [0, 1) means the mixed
training set is a share f general items: to the run's n_train task items (decontaminated,
subset as always) n_train*f/(1-f) general items are added (rounded to the nearest integer).
They are the general pool in an order drawn from the run's seed (`random.Random`, the same
on every machine), repeated as often as the count needs, so seed s of every configuration
sees the same general items and two seeds see them in different orders and subsets.

The general pool is the retention task's `Task.replay` set (toy-general: its training
stream, MCQs about the general facts; mmlu: the val rows of the evaluated subjects), with
every item dropped whose question an eval item asks or that a training task's validation
split holds, by the sweep's own decontamination rule (`rankscope.decontam`, 13-gram). No
test or validation question is ever trained on. A retention task without a general set
refuses replay when the plan is made (`check`).

Toy world caveat: its general knowledge is exactly the facts the retention probe asks about
(every fact, in both phrasings for most), so what survives decontamination rehearses the
MCQ format and the facts in the phrasings the test does not use; on real models the replay
set (MMLU val questions) shares subjects, not questions, with the probe.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from rankscope.config import SweepConfig
from rankscope.decontam import contaminated, index_eval
from rankscope.errors import ConfigError, DataError
from rankscope.tasks import TASKS, Item, TaskContext


def enabled(cfg: SweepConfig) -> bool:
    """Whether some run of the sweep mixes general items in."""
    return any(cfg.train.replay_fractions)


def check(cfg: SweepConfig) -> None:
    """Refuse replay when the retention task offers no general set to replay."""
    ret = cfg.tasks.retention
    if enabled(cfg) and TASKS[ret].replay is None:
        have = ", ".join(sorted(n for n, t in TASKS.items() if t.replay is not None))
        raise ConfigError(
            f"train.replay_fraction: no general-domain set to replay for retention task "
            f"{ret!r} (replay draws from the retention task's general set; {have} have one); "
            "set train.replay_fraction to 0"
        )


def general_count(n_train: int, fraction: float) -> int:
    """General items added to `n_train` task items so that they are `fraction` of the mix."""
    return round(n_train * fraction / (1 - fraction)) if fraction else 0


def general_pool(cfg: SweepConfig, ctx: TaskContext) -> list[Item]:
    """The retention task's general set without any item an eval task's test question or a
    training task's validation item contaminates. `ctx`: the sweep's zero-shot context."""
    check(cfg)
    pool = TASKS[cfg.tasks.retention].replay(ctx)  # type: ignore[misc]
    held = [TASKS[t].items("test", ctx) for t in cfg.tasks.eval]
    held += [TASKS[t].items("val", ctx) for t in cfg.tasks.train if "val" in TASKS[t].splits]
    dropped: set[str] = set()
    for items in held:
        if items:
            dropped |= set(contaminated(pool, index_eval(items)))
    kept = [it for it in pool if it.id not in dropped]
    if not kept:
        raise DataError(
            f"train.replay_fraction: every one of the {len(pool)} general items of "
            f"{cfg.tasks.retention!r} overlaps an eval or validation item; nothing to replay"
        )
    return kept


def mix(items: Sequence[Item], pool: Sequence[Item], fraction: float, seed: int) -> list[Item]:
    """The task items followed by `general_count(len(items), fraction)` general items: the
    pool in the seed's order, repeated as often as needed (the trainer shuffles the mix)."""
    n = general_count(len(items), fraction)
    if not n:
        return list(items)
    order = list(pool)
    random.Random(f"replay/{seed}").shuffle(order)
    repeats = -(-n // len(order))
    return [*items, *(order * repeats)[:n]]
