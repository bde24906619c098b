"""From sweep to decision: the trade-off of in-domain gain against retention cost, its Pareto
front, and the recommended configuration under the user's limits.

Per train task, every configuration of the sweep (at its lr selected on validation, all its
seeds together) is an :class:`Option` with

* its **gain**: validation score on the train task minus the base model's, paired on the
  same validation items (never test);
* its **retention cost**: the base model's retention score minus its own, on the *selection
  half* of the retention task's items. The retention task has no validation split, so its
  test items are split in two by a fixed hash of the item id (:func:`selection_half`): the
  choice is made on one half and the chosen configuration's cost is *confirmed* on the other,
  so the figure reported for it is not the one it was chosen on;
* its trainable parameters.

Both differences are paired tests (`report.significance.paired`: the two-level t over seeds
and items of `stats.seed_t`, exact McNemar for one seed against one), with 95% intervals.

The **front** holds the options no other option beats on both gain and cost (point
estimates; ties kept). The **recommendation** (:func:`decide`) is the option with the best
validation score among the *admissible* ones (mean retention cost ≤ the limit, trainable
parameters ≤ the limit, when given), every other admissible option compared with it on the
validation items (Holm-corrected), those not significantly different listed as
indistinguishable, and among them the *cheapest equivalent*: the lowest retention cost, then
the fewest parameters. Without limits the recommendation is the report's validation-based one.

Everything here reads the store only (no torch), so `rankscope recommend` runs anywhere.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace

from rankscope.report.data import TEST, VAL, ReportData, base_run
from rankscope.report.keys import MethodKey
from rankscope.report.significance import (
    Candidate,
    Recommendation,
    Unit,
    candidates,
    paired,
    recommend,
    units,
)
from rankscope.stats import Comparison


def selection_half(task: str, item_id: str) -> bool:
    """Whether a retention item is in the half the choice is made on (the other half confirms
    the chosen configuration's cost): a fixed hash of task and item id, the same on every
    machine and in every sweep."""
    return zlib.crc32(f"{task}\0{item_id}".encode()) % 2 == 0


def confirm_half(task: str, item_id: str) -> bool:
    return not selection_half(task, item_id)


@dataclass(frozen=True)
class Limits:
    """The user's limits; None = no limit."""

    max_retention_loss: float | None = None
    """Largest admissible mean retention cost, in percentage points."""
    max_params: int | None = None
    """Most trainable parameters."""


@dataclass(frozen=True)
class Option:
    """One configuration of one train task on the trade-off plane."""

    train_task: str
    key: MethodKey
    lr: float | None
    run_ids: tuple[str, ...]
    val: Candidate
    """Its validation score (mean over seeds, 95% CI)."""
    gain: Comparison | None
    """Validation score minus the base model's (paired); None for the base model itself."""
    cost: Comparison | None
    """Base minus this on the retention task's selection half (paired): what it forgets."""
    params: int | None
    """Trainable parameters (0 for the base model)."""
    on_front: bool = False
    excluded: str = ""
    """Why the limits exclude it ('' when admissible)."""
    unmeasured: str = ""
    """What could not be measured against the base model (no shared validation or retention
    items): such an option is never admissible, on the front or drawn, rather than read as
    gaining or costing 0."""

    @property
    def baseline(self) -> bool:
        return self.key.info.baseline

    @property
    def gain_pp(self) -> float:
        return 0.0 if self.gain is None else 100 * self.gain.diff

    @property
    def cost_pp(self) -> float:
        return 0.0 if self.cost is None else 100 * self.cost.diff


@dataclass(frozen=True)
class Confirmed:
    """The recommended configuration measured on items it was not chosen on."""

    in_domain: Comparison | None
    """Test score on the train task minus the base model's."""
    retention: Comparison | None
    """Base minus it on the confirmation half of the retention items (its cost, pp)."""


@dataclass(frozen=True)
class Decision:
    """The trade-off and the recommendation for one train task."""

    train_task: str
    options: list[Option]
    best: Option | None
    """None when no option is admissible (cannot happen while the base model is in the
    sweep: it gains and costs nothing)."""
    equivalent: list[Option] = field(default_factory=list)
    """Admissible options not significantly different from `best` on validation."""
    worse: list[Option] = field(default_factory=list)
    cheapest: Option | None = None
    """Among best and equivalent: lowest retention cost, then fewest parameters."""
    confirmed: Confirmed | None = None
    cheapest_confirmed: Confirmed | None = None
    """The cheapest equivalent (when it is not `best`) on the items it was not chosen on."""
    retention_task: str | None = None
    limits: Limits = field(default_factory=Limits)
    vs_best: dict[Unit, Comparison] = field(default_factory=dict)
    """(train task, key) -> its validation difference from the best (Holm-adjusted)."""


# ------------------------------------------------------------------ the options
def _params(data: ReportData, run_ids: tuple[str, ...]) -> int | None:
    rows = {r["run_id"]: r for r in data.runs}
    vals = [rows[r].get("trainable_params") for r in run_ids if r in rows]
    vals = [v for v in vals if v is not None]
    return int(vals[0]) if vals else None


def _front(options: list[Option]) -> set[int]:
    """Indices of the options no other beats on gain (higher) and cost (lower) at once."""

    def beats(a: Option, b: Option) -> bool:
        no_worse = a.gain_pp >= b.gain_pp and a.cost_pp <= b.cost_pp
        return no_worse and (a.gain_pp > b.gain_pp or a.cost_pp < b.cost_pp)

    measured = [o for o in options if not o.unmeasured]
    return {
        i
        for i, o in enumerate(options)
        if not o.unmeasured and not any(beats(p, o) for p in measured)
    }


def _excluded(o: Option, limits: Limits) -> str:
    why = [o.unmeasured] if o.unmeasured else []
    if limits.max_retention_loss is not None and o.cost_pp > limits.max_retention_loss:
        why.append(f"retention cost {o.cost_pp:+.2f} pp > {limits.max_retention_loss:g} pp")
    if limits.max_params is not None and (o.params or 0) > limits.max_params:
        why.append(f"{o.params:,} trainable parameters > {limits.max_params:,}")
    return "; ".join(why)


def options(
    data: ReportData, task: str, limits: Limits = Limits(), found: dict | None = None
) -> list[Option]:
    """Every configuration of `task` with validation scores, and the base model. `found`:
    `significance.units(data)`, when the caller has it."""
    found = units(data) if found is None else found
    base = base_run(data.runs)
    base_ids = [base["run_id"]] if base else []
    ret = _retention(data, task)
    mine = {k: tuple(r) for (t, k), r in found.items() if t == task}
    out = []
    for cand, _ in candidates(data, task, found):
        if cand.key.info.baseline:
            ids: tuple[str, ...] = tuple(base_ids)
            gain = cost = None
            params: int | None = 0
        else:
            ids = mine.get(cand.key, ())
            gain = paired(data, ids, base_ids, (task,), VAL) if base_ids else None
            cost = None
            if ret and base_ids:
                cost = paired(data, base_ids, ids, (ret,), TEST, selection_half, "select")
            params = _params(data, ids)
        option = Option(task, cand.key, cand.lr, ids, cand, gain, cost, params)
        out.append(replace(option, unmeasured=_unmeasured(option, bool(base_ids), ret)))
    out.sort(key=lambda o: o.key.sort_key)
    front = _front(out)
    return [
        replace(o, on_front=i in front, excluded=_excluded(o, limits)) for i, o in enumerate(out)
    ]


def _retention(data: ReportData, task: str) -> str | None:
    """The retention task a configuration trained on `task` forgets on (None: none, or the
    train task itself)."""
    ret = data.retention_task
    return ret if ret and ret != task else None


def _unmeasured(o: Option, has_base: bool, ret: str | None) -> str:
    """`ret`: `_retention(data, o.train_task)`."""
    if o.baseline or not has_base:
        return ""
    missing = [] if o.gain is not None else ["no validation items shared with the base model"]
    if o.cost is None and ret:
        missing.append(f"no {ret} items shared with the base model")
    return "; ".join(missing)


# ------------------------------------------------------------------ the decision
def _confirm(data: ReportData, task: str, o: Option) -> Confirmed:
    base = base_run(data.runs)
    if o.baseline or base is None:
        return Confirmed(None, None)
    b = [base["run_id"]]
    ret = _retention(data, task)
    retention = None
    if ret:
        retention = paired(data, b, o.run_ids, (ret,), TEST, confirm_half, "confirm")
    return Confirmed(paired(data, o.run_ids, b, (task,), TEST), retention)


def decide(data: ReportData, task: str, limits: Limits = Limits()) -> Decision | None:
    """The options of `task`, its front and the recommendation under `limits`; None when the
    task has no validation scores."""
    found = units(data)
    opts = options(data, task, limits, found)
    if not opts:
        return None
    admissible = {o.key for o in opts if not o.excluded}
    rec: Recommendation | None = recommend(data, task, found, admissible.__contains__)
    by_key = {o.key: o for o in opts}
    base = dict(train_task=task, options=opts, retention_task=data.retention_task, limits=limits)
    if rec is None:
        return Decision(best=None, **base)  # type: ignore[arg-type]
    best = by_key[rec.best.key]
    same = [by_key[c.key] for c in rec.others if c.indistinguishable]
    worse = [by_key[c.key] for c in rec.others if c.vs_best is not None and c.vs_best.significant]
    cheapest = min([best, *same], key=lambda o: (o.cost_pp, o.params or 0, o.key.sort_key))
    vs_best = {(task, c.key): c.vs_best for c in rec.others if c.vs_best is not None}
    return Decision(
        best=best,
        equivalent=same,
        worse=worse,
        cheapest=cheapest,
        confirmed=_confirm(data, task, best),
        cheapest_confirmed=None if cheapest is best else _confirm(data, task, cheapest),
        vs_best=vs_best,
        **base,  # type: ignore[arg-type]
    )


def decisions(data: ReportData, limits: Limits = Limits()) -> list[Decision]:
    """One decision per train task with validation scores (cached on `data` per limits)."""
    cache = data.cache.setdefault("decisions", {})
    if limits not in cache:
        found = (decide(data, t, limits) for t in data.train_tasks)
        cache[limits] = [d for d in found if d is not None]
    return cache[limits]


# ------------------------------------------------------------------ as data
def _comparison(c: Comparison | None) -> dict | None:
    if c is None:
        return None
    return {
        "diff_pp": 100 * c.diff,
        "lo_pp": 100 * c.lo,
        "hi_pp": 100 * c.hi,
        "p": c.p,
        "test": c.test,
        "n_items": c.n_items,
    }


def _option(o: Option) -> dict:
    return {
        "method": o.key.method,
        "rank": o.key.rank,
        "alpha": o.key.alpha,
        "variant": o.key.variant,
        "lr": o.lr,
        "run_ids": list(o.run_ids),
        "seeds": o.val.val.n,
        "val_score": {"mean": o.val.val.est, "lo": o.val.val.lo, "hi": o.val.val.hi},
        "gain_val": _comparison(o.gain),
        "retention_cost_selection_half": _comparison(o.cost),
        "trainable_params": o.params,
        "on_front": o.on_front,
        "excluded": o.excluded or None,
        "unmeasured": o.unmeasured or None,
    }


def to_dict(d: Decision) -> dict:
    """A decision as plain JSON-able data (what `rankscope recommend --json` writes)."""
    pick = None if d.best is None else d.options.index(d.best)
    return {
        "train_task": d.train_task,
        "retention_task": d.retention_task,
        "limits": {
            "max_retention_loss_pp": d.limits.max_retention_loss,
            "max_params": d.limits.max_params,
        },
        "recommended": pick,
        "equivalent": [d.options.index(o) for o in d.equivalent],
        "cheapest_equivalent": None if d.cheapest is None else d.options.index(d.cheapest),
        "confirmed": _confirmed(d.confirmed),
        "cheapest_confirmed": _confirmed(d.cheapest_confirmed),
        "options": [_option(o) for o in d.options],
    }


def _confirmed(c: Confirmed | None) -> dict | None:
    if c is None:
        return None
    return {
        "in_domain_test": _comparison(c.in_domain),
        "retention_cost_confirmation_half": _comparison(c.retention),
    }
