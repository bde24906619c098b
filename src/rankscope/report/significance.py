"""The paired comparisons the summary states, with the multiple-comparison correction.

The fine-tuning seed alone can move a score by tens of points, so the summary never reads a
difference off two point estimates. Every difference it states is a paired test
(`rankscope.stats.compare`) on per-item correctness of the same eval items: the runs' items
are aligned by item id and only items every compared run has are kept. With several seeds
the interval and p come from the two-level t test of `stats.seed_t` (seed-to-seed spread of
the per-seed means plus the items' sampling variance, the seeds' degrees of freedom; the
hierarchical bootstrap of the first design called 2-3x too many null differences
significant with 3 seeds); one seed against one uses the exact McNemar p with a bootstrap
interval over items.

Claims (`summary_claims`), each configuration at its lr selected on validation
(`report.selection`) and per train task:

* every tuned configuration vs the base model: in-domain (eval task = train task),
  cross-domain (every eval task that is neither the train task nor the retention task, items
  pooled) and retention (the retention task);
* every ranked (LoRA) configuration vs full SFT of the same train task: in-domain and
  retention.

Holm's correction runs over all of them together: the summary is one family of claims.

Cost and resolution. A full sweep's summary makes ~100 comparisons on a few hundred to a few
thousand items: `stats.PairedTests` computes the one-seed ones with the item resampling
shared per item count, and takes p from the normal tail of the replicates where the
bootstrap's 1/(n_boot+1) floor would otherwise, after Holm's multiplication by ~100, make no
difference significant; the several-seed ones are closed-form. The intervals are
per-comparison 95% intervals, not corrected for multiplicity.

The recommendation (`recommendations`) is made on the *validation* items only: per train
task the configuration with the best mean validation score, and every other one compared
with it by the same paired test, Holm-corrected over those tests; a configuration whose
difference is not significant is statistically indistinguishable from the best. The best is
chosen and tested on the same items, so its score is biased up (the winner's curse) and
"significantly worse" comes too easily: in a simulation of 8 equal configurations on 200
items (`benchmarks/null_rates.py`), some configuration was called significantly worse in
8.0 % of sweeps with one seed each (5 % nominal), 1.7 % with three seeds (the seed test's
2 df absorb it). With one seed, read the indistinguishable set as a lower bound.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from rankscope.report.data import TEST, VAL, AggScore, ReportData, base_run, done_runs
from rankscope.report.keys import MethodKey
from rankscope.report.selection import Group, group_key, selected_lrs
from rankscope.stats import Comparison, Interval, PairedTests, holm_adjust

N_BOOT = 2000
"""Bootstrap replicates per comparison: enough for p down to ~1/2000 and stable 95% bounds,
cheap enough for a full sweep's summary in seconds."""

IN, CROSS, RETENTION = "in-domain", "cross-domain", "retention"
BASE, FULL = "base", "full"

Unit = tuple[str, MethodKey]
"""(train task, shown key): the group key at its selected lr, or the key with its lr when
selection was impossible (then every lr is its own unit)."""


@dataclass(frozen=True)
class Claim:
    """One comparison the summary states: `key` trained on `train_task` minus `reference`."""

    train_task: str
    key: MethodKey
    reference: str
    """'base' (the base model) or 'full' (full SFT of the same train task)."""
    kind: str
    """'in-domain', 'cross-domain' or 'retention'."""
    tasks: tuple[str, ...]
    comparison: Comparison


@dataclass(frozen=True)
class Candidate:
    """A configuration in the recommendation, with its validation score on the train task."""

    key: MethodKey
    lr: float | None
    val: Interval
    vs_best: Comparison | None = None
    """This minus the best on the validation items (Holm-adjusted); None for the best and
    for candidates without validation predictions."""

    @property
    def indistinguishable(self) -> bool:
        return self.vs_best is not None and not self.vs_best.significant


@dataclass(frozen=True)
class Recommendation:
    train_task: str
    best: Candidate
    others: list[Candidate]


# ------------------------------------------------------------------ the bootstrap
def _seed(*parts: object) -> int:
    """A deterministic bootstrap seed per comparison, independent of the others' order."""
    return zlib.crc32("|".join(map(str, parts)).encode())


# ------------------------------------------------------------------ paired matrices
ItemFilter = Callable[[str, str], bool]
"""(task, item id) -> whether the item takes part (e.g. one half of a task's items)."""


def _items(
    data: ReportData, run_id: str, tasks: Sequence[str], split: str, keep: ItemFilter | None
) -> dict:
    return {
        (t, i): v
        for t in tasks
        for i, v in data.correct(run_id, t, split).items()
        if keep is None or keep(t, i)
    }


def paired(
    data: ReportData,
    a: Sequence[str],
    b: Sequence[str],
    tasks: Sequence[str],
    split: str,
    keep: ItemFilter | None = None,
    tag: str = "",
) -> Comparison | None:
    """mean(A) - mean(B) over the items (of `tasks`, pooled; only those `keep` accepts)
    every run of A and B has; None when there is no such item. A run without any such
    predictions is left out. `tag` names the item filter in the bootstrap's seed."""
    rows_a = [x for r in a if (x := _items(data, r, tasks, split, keep))]
    rows_b = [x for r in b if (x := _items(data, r, tasks, split, keep))]
    if not rows_a or not rows_b:
        return None
    common = set.intersection(*(set(r) for r in rows_a + rows_b))
    if not common:
        return None
    order = sorted(common)
    ma = np.array([[r[i] for i in order] for r in rows_a], dtype=float)
    mb = np.array([[r[i] for i in order] for r in rows_b], dtype=float)
    boot = data.cache.setdefault("bootstrap", PairedTests(N_BOOT))
    parts = (*a, "vs", *b, *tasks, split) + ((tag,) if tag else ())
    return boot.compare(ma, mb, seed=_seed(*parts))


def units(data: ReportData, selected: dict[Group, float | None] | None = None) -> dict:
    """Unit -> its done runs at the selected lr (every lr its own unit where selection was
    impossible), in `MethodKey` order."""
    selected = selected_lrs(data) if selected is None else selected
    out: dict[Unit, list[str]] = defaultdict(list)
    for run in done_runs(data.runs):
        key, task = MethodKey.of(run), run.get("train_task")
        if key.info.baseline or task is None:
            continue
        lr = selected.get((task, group_key(key)))
        if lr is None:
            out[(task, key)].append(run["run_id"])
        elif key.lr == lr:
            out[(task, group_key(key))].append(run["run_id"])
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0], kv[0][1].sort_key)))


# ------------------------------------------------------------------ the summary's claims
def _kinds(data: ReportData, train_task: str) -> dict[str, tuple[str, ...]]:
    ret = data.retention_task
    cross = tuple(e for e in data.eval_tasks if e not in (train_task, ret))
    kinds = {IN: (train_task,), CROSS: cross}
    if ret and ret != train_task:
        kinds[RETENTION] = (ret,)
    return {k: v for k, v in kinds.items() if v}


def _full_runs(found: dict[Unit, list[str]], train_task: str, replay: float) -> list[str]:
    """Full SFT's runs on `train_task` at the same replay fraction (plain variant first)."""
    fulls = [
        (k, r)
        for (t, k), r in found.items()
        if t == train_task and k.info.reference and k.replay == replay
    ]
    plain = [r for k, r in fulls if not k.variant]
    return plain[0] if plain else (fulls[0][1] if fulls else [])


def _raw_claims(data: ReportData) -> list[Claim]:
    base = base_run(data.runs)
    found = units(data)
    out = []
    for (task, key), runs in found.items():
        refs = {BASE: [base["run_id"]] if base else []}
        if key.info.ranked:
            refs[FULL] = _full_runs(found, task, key.replay)
        for ref, ref_runs in refs.items():
            for kind, tasks in _kinds(data, task).items():
                if ref == FULL and kind == CROSS:
                    continue
                c = paired(data, runs, ref_runs, tasks, TEST) if ref_runs else None
                if c is not None:
                    out.append(Claim(task, key, ref, kind, tasks, c))
    return out


def summary_claims(data: ReportData) -> list[Claim]:
    """Every comparison the summary states, Holm-corrected together (cached on `data`)."""
    if "claims" not in data.cache:
        raw = _raw_claims(data)
        adjusted = holm_adjust([c.comparison for c in raw])
        data.cache["claims"] = [
            replace(c, comparison=a) for c, a in zip(raw, adjusted, strict=True)
        ]
    return data.cache["claims"]


# ------------------------------------------------------------------ the recommendation
def _candidate(key: MethodKey, a: AggScore) -> Candidate:
    return Candidate(key, a.key.lr, a.ci or Interval(a.mean, None, None, a.n_seeds))


def candidates(data: ReportData, task: str, found: dict[Unit, list[str]]) -> list:
    """(candidate, its runs) for every configuration with validation scores on `task`: the
    base model, and each tuned unit of `task` (its validation aggregate at the selected lr)."""
    val = [a for a in data.val_agg if a.task == task]
    out = [(_candidate(a.key, a), a.run_ids) for a in val if a.key.info.baseline]
    for (t, key), runs in found.items():
        mine = [a for a in val if a.train_task == t == task and set(a.run_ids) & set(runs)]
        if mine:
            out.append((_candidate(key, mine[0]), runs))
    return out


def recommend(
    data: ReportData,
    task: str,
    found: dict[Unit, list[str]],
    allowed: Callable[[MethodKey], bool] | None = None,
) -> Recommendation | None:
    """The best validation configuration for `task` and every other one compared with it;
    with `allowed`, only among the configurations it accepts (the others are left out)."""
    cands = [c for c in candidates(data, task, found) if allowed is None or allowed(c[0].key)]
    if not cands:
        return None
    best, best_runs = max(cands, key=lambda c: c[0].val.est)  # first of ties: MethodKey order
    others = [(c, r) for c, r in cands if c is not best]
    tests = [paired(data, r, best_runs, (task,), VAL) for _, r in others]
    done = [c for c in tests if c is not None]
    adjusted = iter(holm_adjust(done))
    rest = [
        replace(c, vs_best=None if t is None else next(adjusted))
        for (c, _), t in zip(others, tests, strict=True)
    ]
    return Recommendation(task, best, rest)


def recommendations(data: ReportData) -> list[Recommendation]:
    """One recommendation per train task that has validation scores (cached on `data`)."""
    if "recommendations" not in data.cache:
        found = units(data)
        recs = (recommend(data, t, found) for t in data.train_tasks)
        data.cache["recommendations"] = [r for r in recs if r is not None]
    return data.cache["recommendations"]
