"""Value checks the config sections share: bounds, finite numbers, lists without repeats.

Each raises ConfigError naming the dotted field (`train.epochs: must be > 0, got 0`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rankscope.errors import require


def at_least(where: str, value: float, low: int, show: bool = False) -> None:
    """`where: must be >= low` (with `, got value` where the message has always shown it)."""
    require(value >= low, f"{where}: must be >= {low}" + (f", got {value}" if show else ""))


def positive(where: str, value: float) -> None:
    """`value` > 0 and finite (inf or nan is no training length, rate or scale)."""
    require(value > 0, f"{where}: must be > 0, got {value}")
    require(math.isfinite(value), f"{where}: must be a finite number, got {value}")


def rates(where: str, lr: float | list[float]) -> list[float]:
    """A learning rate or a list of them (an axis of the grid), checked: positive, finite,
    no repeat."""
    values = [lr] if isinstance(lr, (int, float)) else list(lr)
    require(len(values) > 0, f"{where}: give at least one learning rate")
    for x in values:
        positive(where, x)
    require(len(set(values)) == len(values), f"{where}: a learning rate is listed twice")
    return [float(x) for x in values]


def rates_for(where: str, lr: float | list | dict, rank: int | None) -> list[float]:
    """The rates the LoRA runs of rank `rank` train at: `lr` itself, or its entry for that
    rank when `lr` gives one per rank."""
    if not isinstance(lr, dict):
        return rates(where, lr)
    require(
        rank in lr,
        f"{where}: no rate for rank {rank}; give every rank one, or one rate for all ranks "
        f"({where}=1e-3); the rates given: {lr}",
    )
    return rates(f"{where}.{rank}", lr[rank])


def unique(where: str, values: Sequence[Any], what: str) -> None:
    """Refuse a list that names an entry twice (a run or a column would appear twice)."""
    twice = [v for i, v in enumerate(values) if v in values[:i]]
    require(
        not twice, f"{where}: {twice[0]!r} is listed twice; list each {what} once" if twice else ""
    )
