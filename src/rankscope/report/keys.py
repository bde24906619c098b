"""The identity of a group of runs in the report, as typed fields of the ``runs`` table.

The report used to build a string such as ``"lora r=8 (rslora)"``, group by it and parse
it back for sorting, prose and plotting. It now groups by :class:`MethodKey`, which holds
the columns themselves, and only *renders* a label. Everything the report knows about
individual method names (display order, prose name, how a method is drawn) is in
:data:`METHODS`, read from the method registry (`rankscope.methods`), so a new method needs
no edit here and the report orders and names methods exactly as the plan does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rankscope import methods as registry
from rankscope.identity import fmt_lr

Row = Mapping[str, Any]
"""One row of a store table, as :class:`rankscope.store.Store` returns it."""


@dataclass(frozen=True)
class MethodInfo:
    """What the report needs to know about a training method, apart from its name."""

    order: int
    """Position among methods in every table, legend and list (base first)."""
    prose: str | None = None
    """Name used in sentences ("full SFT"); None means the method name itself."""
    baseline: bool = False
    """The untouched model that every change is measured against."""
    ranked: bool = False
    """Has a rank: the label shows it and the figures draw it against the rank axis."""
    reference: bool = False
    """Trained but not ranked: drawn as a dashed reference line in the rank figures."""


METHODS: dict[str, MethodInfo] = {
    m.name: MethodInfo(m.order, m.prose_name, m.baseline, m.ranked, m.reference)
    for m in registry.METHODS.values()
}
UNKNOWN_METHOD = MethodInfo(9)
"""A method the registry does not know (a store written by another version): listed last,
drawn like the base model."""


def method_info(method: str) -> MethodInfo:
    return METHODS.get(method, UNKNOWN_METHOD)


@dataclass(frozen=True)
class MethodKey:
    """The configuration a report row stands for, minus the train task and the seed: the
    run identity's columns (method, rank, variant, alpha, lr, replay), never a parsed label.

    The label shows alpha only when it differs from the default α = 2r, the replay fraction
    only when there is one ('lora r=8 replay 25%'), and never the lr:
    a configuration is reported at the lr chosen on validation (`report.selection`), and
    `lr_label` names the lr where several are shown side by side.
    """

    method: str
    rank: int | None = None
    """Only for ranked methods; None for the others (their label has no rank)."""
    variant: str = ""
    alpha: float | None = None
    lr: float | None = None
    replay: float = 0.0
    """`train.replay_fraction` (0: no general items mixed in; stores from before replay)."""

    @classmethod
    def of(cls, run: Row) -> MethodKey:
        """The key of a ``runs`` row (or any row with the identity columns)."""
        method = str(run["method"])
        rank = run.get("rank") if method_info(method).ranked else None
        alpha = run.get("alpha") if method_info(method).ranked else None
        replay = float(run.get("replay") or 0.0)
        return cls(method, rank, run.get("variant") or "", alpha, run.get("lr"), replay)

    @property
    def info(self) -> MethodInfo:
        return method_info(self.method)

    def _name(self, method_name: str) -> str:
        rank = f" r={self.rank}" if self.info.ranked else ""
        alpha = ""
        if self.info.ranked and self.alpha is not None and self.rank is not None:
            if float(self.alpha) != 2.0 * self.rank:
                alpha = f" α={float(self.alpha):g}"
        variant = f" ({self.variant})" if self.variant else ""
        return method_name + rank + alpha + variant + self.replay_label

    @property
    def replay_label(self) -> str:
        """' replay 25%' for a run with replay, '' without."""
        return f" replay {100 * self.replay:g}%" if self.replay else ""

    @property
    def label(self) -> str:
        """For tables and legends: 'base', 'full', 'lora r=8', 'lora r=8 (rslora)'."""
        return self._name(self.method)

    @property
    def lr_label(self) -> str:
        """The label with the lr appended ('lora r=8 lr=0.0001'); the label when lr is None."""
        return self.label + ("" if self.lr is None else f" lr={fmt_lr(self.lr)}")

    @property
    def prose(self) -> str:
        """For sentences: 'full SFT', 'LoRA r=8 (rslora)'."""
        return self._name(self.info.prose or self.method)

    @property
    def sort_key(self) -> tuple[int, str, int, float]:
        """Base, full, then ranked methods by variant (plain first), rank and replay fraction
        (the methods' own `sort_key`, then replay: the plan's order)."""
        return (self.info.order, self.variant, self.rank or 0, self.replay)


def method_label(run: Row) -> str:
    """The display label of a run row: ``MethodKey.of(run).label``."""
    return MethodKey.of(run).label


class Keyed:
    """The display fields of a row that stands for one `MethodKey` (its `key` field), so the
    report's row types read them from the key instead of each repeating them."""

    key: MethodKey

    @property
    def label(self) -> str:
        return self.key.label

    @property
    def method(self) -> str:
        return self.key.method

    @property
    def rank(self) -> int | None:
        return self.key.rank

    @property
    def variant(self) -> str:
        return self.key.variant
