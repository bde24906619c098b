"""The analyze stage: spectral analysis of ΔW and attention analysis, rows into the store.

Per run and module: W₀ from the base model, W₁ = W₀ + ΔW with ΔW read by the run's method
(`Method.delta_w`: s·B·A for LoRA, whose spectrum comes from its factors; DoRA's with its
magnitude rescaling; PiSSA's as saved, converted to an adapter on the untouched W₀; the
saved weights for full SFT). W₀'s SVD is computed once per base model and shared by all
runs. Each (run, module) is stored in one transaction, so the stage resumes per module.

`rankscope.analysis.spectral` (scipy) and `rankscope.analysis.attention` (torch) are imported
inside the functions that use them: the driver imports this module, and `rankscope --help`
must not pay for them.
"""

from __future__ import annotations

import random
from collections import defaultdict
from itertools import islice, zip_longest
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rankscope import methods
from rankscope.config import SweepConfig
from rankscope.evaluate import evaluate
from rankscope.models import load_base
from rankscope.plan import RunSpec
from rankscope.rundir import AnalysisFiles
from rankscope.tasks import TASKS
from rankscope.tasks.base import Item

Row = tuple[str, str, str, int, int, str, float]  # run_id, kind, module, layer, head, metric, value


class Rows(Protocol):
    """Where analysis rows go: the store, or a run's analysis/ dir (`rundir.AnalysisFiles`)."""

    def has_analysis(self, run_id: str, kind: str, module: str | None = None) -> bool: ...
    def save_analysis(self, rows: list[Row]) -> None: ...
    def analysis(self, kind: str | None = None) -> list[dict[str, Any]]: ...


_W0_SVD: dict[tuple[str, str], Any] = {}


def _layer_index(name: str) -> int:
    parts = name.split(".")
    for i, p in enumerate(parts[:-1]):
        if p == "layers" and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return -1


def analysed_modules(model: Any, cfg: SweepConfig) -> list[str]:
    """Dotted names of the linear modules to analyse (the adapter's targets, so that every
    method is compared on the same modules, or all linear layers)."""
    import torch

    targets = methods.analysed_targets(cfg)
    every = cfg.analysis.modules == "all-linear" or targets == ["all-linear"]
    names = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and _layer_index(name) >= 0:
            if every or name.rsplit(".", 1)[-1] in targets:
                names.append(name)
    return names


def _base_weights(base: Any, names: list[str]) -> dict[str, Any]:
    mods = dict(base.named_modules())
    return {n: mods[n].weight.detach().double().cpu() for n in names}


def _w0_svd(model_key: str, name: str, w0: Any) -> Any:
    key = (model_key, name)
    if key not in _W0_SVD:
        _W0_SVD[key] = np.linalg.svd(w0.numpy(), full_matrices=False)
    return _W0_SVD[key]


def spectral_rows(
    run: RunSpec, run_dir: Path, cfg: SweepConfig, store: Rows, base: Any, model_key: str
) -> int:
    """Analyse every module of one run not yet in the store; return how many were added."""
    from rankscope.analysis.spectral import compare_weights

    method = methods.get(run.method)
    if not method.trains:
        return 0
    names = analysed_modules(base, cfg)
    todo = [n for n in names if not store.has_analysis(run.run_id, "spectral", n)]
    if not todo:
        return 0
    w0 = _base_weights(base, todo)
    pairs = method.delta_w(run_dir, base, todo, w0)
    a = cfg.analysis
    for name, delta, sv in pairs:
        base_w = w0[name]
        delta = delta if delta is not None else base_w * 0
        metrics = compare_weights(
            base_w.numpy(),
            (base_w + delta).numpy(),
            k=a.top_k,
            intruder_k=a.intruder_k,
            eps=tuple(a.intruder_eps),
            w0_svd=_w0_svd(model_key, name, base_w),
            delta_sv=sv,
        )
        short, layer = name.rsplit(".", 1)[-1], _layer_index(name)
        rows = [(run.run_id, "spectral", name, layer, -1, k, float(v)) for k, v in metrics.items()]
        rows.append((run.run_id, "spectral", name, layer, -1, f"type:{short}", 1.0))
        store.save_analysis(rows)
    return len(todo)


# ------------------------------------------------------------------ attention
def probe_batches(
    cfg: SweepConfig, items_by_task: dict[str, list], tok: Any
) -> list[tuple[Any, Any]]:
    """A fixed, seeded probe set drawn from the sweep's eval tasks, as padded batches."""
    import torch

    rng = random.Random(f"probe/{cfg.seeds[0]}")
    pool = [it.prompt for task in sorted(items_by_task) for it in items_by_task[task]]
    prompts = rng.sample(pool, min(cfg.analysis.probe_items, len(pool)))
    batches = []
    for i in range(0, len(prompts), 16):
        enc = [tok(p)["input_ids"] for p in prompts[i : i + 16]]
        width = max(map(len, enc))
        ids = torch.full((len(enc), width), tok.pad_token_id)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        for r, s in enumerate(enc):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        batches.append((ids, mask))
    return batches


def attention_rows(run: RunSpec, model: Any, base: Any, batches: list, store: Rows) -> None:
    """Per layer/head entropy, sink mass, JS divergence vs base; per layer CKA."""
    from rankscope.analysis.attention import attention_stats

    if store.has_analysis(run.run_id, "attention"):
        return
    ref = None if methods.get(run.method).baseline else base
    rows = []
    for r in attention_stats(model, ref, batches):
        if "head" in r:
            for metric in ("entropy", "sink_mass", "js_div"):
                if metric in r:
                    rows.append(
                        (
                            run.run_id,
                            "attention",
                            "attn",
                            r["layer"],
                            r["head"],
                            metric,
                            float(r[metric]),
                        )
                    )
        else:
            rows.append((run.run_id, "cka", "hidden", r["layer"], -1, "cka", float(r["cka"])))
    store.save_analysis(rows)


def top_heads(store: Rows, run_id: str, n: int) -> list[tuple[int, int]]:
    """The run's n heads whose attention moved most from the base model's (JS divergence)."""
    rows = [
        r for r in store.analysis("attention") if r["run_id"] == run_id and r["metric"] == "js_div"
    ]
    rows.sort(key=lambda r: -r["value"])
    return [(r["layer"], r["head"]) for r in rows[:n]]


def random_heads(
    store: Rows, run_id: str, exclude: list[tuple[int, int]], n: int, seed: str
) -> list[tuple[int, int]]:
    """n heads drawn (seeded) from the run's heads other than ``exclude``: the control.

    Zeroing *any* n heads costs some accuracy, so a top-head drop means something only next
    to the drop of as many heads that were not chosen for having changed.
    """
    heads = {
        (r["layer"], r["head"])
        for r in store.analysis("attention")
        if r["run_id"] == run_id and r["head"] >= 0
    }
    pool = sorted(heads - set(exclude))
    return sorted(random.Random(seed).sample(pool, min(n, len(pool))))


def stratified_sample(items: list[Item], n: int, seed: str) -> list[Item]:
    """Up to n items, round-robin over `Item.group` in a seeded order, seeded within groups.

    Eval files are grouped (MMLU by subject), so the first n items would be one subject; this
    spreads the sample over every group, and a seed that names no run gives every run of a
    sweep the same items, so their ablation scores are paired.
    """
    rng = random.Random(seed)
    groups: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        groups[it.group].append(it)
    queues = [rng.sample(groups[g], len(groups[g])) for g in sorted(groups)]
    rng.shuffle(queues)  # which groups get one item more when n is not a multiple
    interleaved = (it for rnd in zip_longest(*queues) for it in rnd if it is not None)
    return list(islice(interleaved, n))


ABLATION = ("ablation", "heads")
"""(kind, module) of the head-ablation rows."""

# The heads a condition zeroes, by name: none (the reference), top (most changed), random.
HeadSets = dict[str, list[tuple[int, int]]]


def ablation_metric(stat: str, model: str, heads: str, task: str) -> str:
    """Metric name of an ablation row: ``<stat>:<model>:<heads>:<task>``.

    stat: acc | se (item-level standard error) | delta | delta_lo | delta_hi | delta_p (the
    paired change vs the unablated model, its 95% bootstrap interval and p); model: tuned |
    base; heads: none | top | random, and ``top-random`` for the deltas of the top heads'
    accuracy minus the random heads' (is zeroing the changed heads worse than chance heads?).
    """
    return f"{stat}:{model}:{heads}:{task}"


def head_sets(store: Rows, run: RunSpec, cfg: SweepConfig) -> HeadSets:
    """The run's ablation conditions: no head, its top-H heads by JS, H seeded random others.

    The random draw is seeded by the sweep and the top heads, not the run: runs whose top
    heads agree share their control, and the base model's scores with it (`_BASE_SCORES`).
    """
    n = cfg.analysis.ablate_top
    top = top_heads(store, run.run_id, n)
    seed = f"ablation-heads/{cfg.seeds[0]}/{sorted(top)}"
    return {"none": [], "top": top, "random": random_heads(store, run.run_id, top, n, seed)}


def _item_scores(model: Any, tok: Any, task: Any, items: list, cfg: SweepConfig) -> list[float]:
    """Per-item 0/1 of the task's headline metric (acc, or strict exact match), as evaluate
    scores it: the item vectors the paired comparisons need."""
    e = cfg.eval
    preds = evaluate(
        model, tok, task, items, e.batch_size, e.max_new_tokens, chat=cfg.data.chat_template
    )[1]
    return [float(p["correct"]) for p in preds]


_BASE_SCORES: dict[tuple, list[float]] = {}
"""Per-item scores of the untouched base model by (model, eval settings, task, items, zeroed
heads): every run's unablated base condition is the same, and so is any ablation two runs
share, so a process analysing several runs scores each once (the base model's generations
run to max_new_tokens where a tuned model's stop early: they are the costly ones)."""


def _base_key(cfg: SweepConfig, task: Any, items: list[Item], zeroed: list) -> tuple:
    """What the base model's per-item scores depend on: the model, how items are built and
    scored (data and eval settings), which items, which heads are zeroed."""
    ids = tuple(it.id for it in items)
    return (repr(cfg.model), repr(cfg.data), repr(cfg.eval), task.name, ids, tuple(sorted(zeroed)))


def _scores(
    name: str, model: Any, tok: Any, task: Any, items: list, cfg: SweepConfig, heads: HeadSets
) -> dict[str, list[float]]:
    """Per-item scores of ``model`` with each head set zeroed; memoised for the base model."""
    from rankscope.analysis.attention import ablate_heads

    out: dict[str, list[float]] = {}
    for label, zeroed in heads.items():
        key = _base_key(cfg, task, items, zeroed)
        if name == "base" and key in _BASE_SCORES:
            out[label] = _BASE_SCORES[key]
            continue
        with ablate_heads(model, zeroed):
            out[label] = _item_scores(model, tok, task, items, cfg)
        if name == "base":
            _BASE_SCORES[key] = out[label]
    return out


def _paired(prefix: tuple[str, str, str], a: list[float], b: list[float]) -> dict[str, float]:
    """mean(a) - mean(b) on the same items with its CI and p (`stats.compare`), as metrics."""
    from rankscope.stats import compare

    c = compare(a, b)
    vals = {"delta": c.diff, "delta_lo": c.lo, "delta_hi": c.hi, "delta_p": c.p}
    return {ablation_metric(k, *prefix): v for k, v in vals.items()}


def condition_metrics(task: str, model: str, scores: dict[str, list[float]]) -> dict[str, float]:
    """Accuracy and item SE of each head set, and each ablation's paired change."""
    from rankscope.stats import item_se

    out: dict[str, float] = {}
    for heads, correct in scores.items():
        out[ablation_metric("acc", model, heads, task)] = float(np.mean(correct))
        out[ablation_metric("se", model, heads, task)] = item_se(correct)
    for heads in ("top", "random"):
        out |= _paired((model, heads, task), scores[heads], scores["none"])
    out |= _paired((model, "top-random", task), scores["top"], scores["random"])
    return out


def ablation_rows(
    run: RunSpec,
    models: dict[str, Any],
    tok: Any,
    tasks: list[tuple[Any, list]],
    store: Rows,
    cfg: SweepConfig,
) -> None:
    """Zero the run's top-H most-changed heads together, and H random other heads; score each.

    ``models`` maps "tuned" (the run's model) and "base" to models: the same heads zeroed in
    the base model tell whether they mattered before training too. Every condition scores the
    same items, so each change is a paired comparison with an interval. Rows go under
    `ABLATION`: per condition its accuracy, item SE and change (`ablation_metric`), and one
    ``ablated:<set>`` row per zeroed head. Three head sets x two models = six evaluations per
    task, fewer when base-model conditions repeat (the single-head ablation it replaces ran
    1 + H on the tuned model).
    """
    trains = methods.get(run.method).trains
    if not trains or cfg.analysis.ablate_top == 0 or store.has_analysis(run.run_id, *ABLATION):
        return
    heads = head_sets(store, run, cfg)
    values: dict[str, float] = {}
    for task, items in tasks:
        for name, model in models.items():
            scores = _scores(name, model, tok, task, items, cfg, heads)
            values |= condition_metrics(task.name, name, scores)
    rows = [(run.run_id, *ABLATION, -1, -1, k, float(v)) for k, v in values.items()]
    for label in ("top", "random"):
        rows += [(run.run_id, *ABLATION, la, h, f"ablated:{label}", 1.0) for la, h in heads[label]]
    store.save_analysis(rows)


def ablation_tasks(run: RunSpec, cfg: SweepConfig, items: dict[str, list]) -> list[str]:
    """The run's in-domain task and one cross-domain task (retention if nothing else): the
    first multiple-choice one where there is one, since every ablation condition scores it
    again and an MCQ item costs one forward pass where a generative one costs a generation."""
    others = [t for t in cfg.tasks.eval if t not in (run.train_task, cfg.tasks.retention)]
    mcq = [t for t in others if TASKS[t].kind == "mcq"]
    chosen = [run.train_task] if run.train_task in items else []
    return chosen + [(mcq or others or [cfg.tasks.retention])[0]]


def ablation_items(
    run: RunSpec, cfg: SweepConfig, items: dict[str, list[Item]]
) -> list[tuple[Any, list[Item]]]:
    """(task, items) the run's head ablation scores: `analysis.ablation_items` per task,
    stratified by group with a seed that names no run (`stratified_sample`)."""
    n = cfg.analysis.ablation_items
    return [
        (TASKS[t], stratified_sample(items[t], n, f"ablation-items/{cfg.seeds[0]}/{t}"))
        for t in ablation_tasks(run, cfg, items)
    ]


def analyze_run(
    run: RunSpec,
    run_dir: Path,
    cfg: SweepConfig,
    store: Rows,
    base: Any,
    tok: Any,
    model_key: str,
    batches: list,
    items: dict[str, list],
) -> None:
    """Every analysis of one run; each piece is skipped when its rows are stored."""
    spectral_rows(run, run_dir, cfg, store, base, model_key)
    if not cfg.analysis.attention:
        return
    # The tuned model is a fresh load: peft wraps the model it is given in place, and `base`
    # must stay the untouched reference for the attention comparison.
    trains = methods.get(run.method).trains
    model = methods.load_for_eval(run, run_dir, cfg.model)[0] if trains else base
    attention_rows(run, model, base, batches, store)
    tasks = ablation_items(run, cfg, items)
    ablation_rows(run, {"tuned": model, "base": base}, tok, tasks, store, cfg)


def analyze_unit(run: RunSpec, run_dir: Path, cfg: SweepConfig, items: dict[str, list]) -> None:
    """A worker's analyze stage: every analysis of one run not yet in its analysis/ dir."""
    base, tok, path = load_base(cfg.model)
    batches = probe_batches(cfg, items, tok)
    analyze_run(run, run_dir, cfg, AnalysisFiles(run_dir), base, tok, str(path), batches, items)
