"""Head ablation with a control: stratified items, random heads, the base model, and the
uncertainty of every score, on the shipped small toy model and the fixture benchmarks."""

from __future__ import annotations

import copy
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from sweep_configs import small_sweep

from rankscope.analysis.attention import ablate_heads
from rankscope.analyze import (
    ABLATION,
    ablation_items,
    ablation_metric,
    ablation_rows,
    attention_rows,
    head_sets,
    probe_batches,
    random_heads,
    stratified_sample,
    top_heads,
)
from rankscope.config import DataConfig, load_config
from rankscope.evaluate import evaluate
from rankscope.identity import RunSpec
from rankscope.methods import load_base
from rankscope.rundir import AnalysisFiles
from rankscope.stats import compare, item_se
from rankscope.sweep import Sweep
from rankscope.tasks import TASKS, TaskContext

FIXTURES = "tests/fixtures/data"
RUN = RunSpec("toy-arith__full-lr3e-3__s0", "full", "toy-arith", 0, lr=3e-3)


# ------------------------------------------------------------------ which items


@pytest.fixture(scope="module")
def mmlu_items() -> list:
    ctx = TaskContext(data=DataConfig(source="files", dir=FIXTURES))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixtures hold 6 of the 57 subjects
        return TASKS["mmlu"].load("test", ctx)


def test_ablation_items_spread_over_groups(mmlu_items: list) -> None:
    """MMLU files come one subject after another: the first 12 items are one subject, the
    ablation's 12 cover all six, two each, and the same 12 for every run of the sweep."""
    assert len({it.group for it in mmlu_items[:12]}) == 1
    cfg = load_config(
        None,
        [
            "tasks.train=[medmcqa]",
            "tasks.eval=[medmcqa, mmlu]",
            "tasks.retention=mmlu",
            "analysis.ablation_items=12",
        ],
    )
    items = {"mmlu": mmlu_items, "medmcqa": mmlu_items[:30]}
    runs = [
        RunSpec("medmcqa__lora-r8__s0", "lora", "medmcqa", 0, rank=8),
        RunSpec("medmcqa__full__s1", "full", "medmcqa", 1, lr=1e-5),
    ]
    picked = [{t.name: its for t, its in ablation_items(run, cfg, items)} for run in runs]
    assert list(picked[0]) == ["medmcqa", "mmlu"]
    mine = picked[0]["mmlu"]
    assert len(mine) == 12 and len({it.id for it in mine}) == 12
    counts = Counter(it.group for it in mine)
    assert len(counts) == 6 and set(counts.values()) == {2}
    assert [it.id for it in picked[1]["mmlu"]] == [it.id for it in mine]


def test_stratified_sample_is_seeded_and_uneven_groups_differ_by_one(mmlu_items: list) -> None:
    a = stratified_sample(mmlu_items, 20, "s")
    assert [it.id for it in a] == [it.id for it in stratified_sample(mmlu_items, 20, "s")]
    assert [it.id for it in a] != [it.id for it in stratified_sample(mmlu_items, 20, "t")]
    assert sorted(Counter(it.group for it in a).values()) == [3, 3, 3, 3, 4, 4]
    whole = stratified_sample(mmlu_items, 10_000, "s")
    assert sorted(it.id for it in whole) == sorted(it.id for it in mmlu_items)


# ------------------------------------------------------------------ on the toy model


@pytest.fixture(scope="module")
def ablated(tmp_path_factory, cache_dir, small_model_dir):
    """A toy base model, a 'tuned' copy with moved query/key weights, and their analysis."""
    out = tmp_path_factory.mktemp("ablation")
    cfg = small_sweep(out, cache_dir, "analysis.ablate_top=2", "analysis.ablation_items=24")
    base, tok, _ = load_base(cfg.model)
    tuned = copy.deepcopy(base)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in tuned.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                proj.weight += (
                    0.5 * proj.weight.std() * torch.randn(proj.weight.shape, generator=gen)
                )
    sweep = Sweep(cfg)
    items = {t: sweep.items(t, "test") for t in cfg.tasks.eval}
    store = AnalysisFiles(out / "run")
    attention_rows(RUN, tuned, base, probe_batches(cfg, items, tok), store)
    tasks = ablation_items(RUN, cfg, items)
    ablation_rows(RUN, {"tuned": tuned, "base": base}, tok, tasks, store, cfg)
    return cfg, store, {"tuned": tuned, "base": base}, tok, tasks


def _values(store: AnalysisFiles) -> dict[str, float]:
    return {
        r["metric"]: r["value"]
        for r in store.analysis("ablation")
        if r["module"] == ABLATION[1] and r["head"] == -1
    }


def _ablated(store: AnalysisFiles, label: str) -> list[tuple[int, int]]:
    return sorted(
        (r["layer"], r["head"])
        for r in store.analysis("ablation")
        if r["metric"] == f"ablated:{label}"
    )


def test_random_heads_are_seeded_and_never_the_top_heads(ablated) -> None:
    """The small model has 2 x 2 heads: with the top 2 out, the stored control is the other
    two; one random head of those two depends on the seed, and never is a top head."""
    cfg, store, *_ = ablated
    top = top_heads(store, RUN.run_id, 2)
    heads = {(r["layer"], r["head"]) for r in store.analysis("attention")}
    assert _ablated(store, "top") == sorted(top) and len(heads) == 4
    assert _ablated(store, "random") == head_sets(store, RUN, cfg)["random"]
    assert _ablated(store, "random") == sorted(heads - set(top))
    draws = [random_heads(store, RUN.run_id, top, 1, f"s{i}") for i in range(50)]
    assert {d[0] for d in draws} == heads - set(top)
    assert draws == [random_heads(store, RUN.run_id, top, 1, f"s{i}") for i in range(50)]


def test_every_condition_is_stored_for_the_tuned_and_the_base_model(ablated) -> None:
    _, store, _, _, tasks = ablated
    values = _values(store)
    assert len(tasks) == 2
    for task, _ in tasks:
        for model in ("tuned", "base"):
            for heads in ("none", "top", "random"):
                for stat in ("acc", "se"):
                    assert ablation_metric(stat, model, heads, task.name) in values
            for heads in ("top", "random", "top-random"):
                for stat in ("delta", "delta_lo", "delta_hi", "delta_p"):
                    assert ablation_metric(stat, model, heads, task.name) in values


def _scores(model, tok, task, items, cfg, heads) -> np.ndarray:
    e = cfg.eval
    with ablate_heads(model, heads):
        preds = evaluate(model, tok, task, items, e.batch_size, e.max_new_tokens)[1]
    return np.array([float(p["correct"]) for p in preds])


def test_stored_scores_match_the_stats_of_the_item_vectors(ablated) -> None:
    """Re-score the base model with the tuned run's top heads zeroed and unablated: the
    stored accuracy, item SE and paired interval are those of these per-item vectors."""
    cfg, store, models, tok, tasks = ablated
    values = _values(store)
    top = _ablated(store, "top")
    for task, items in tasks:
        none = _scores(models["base"], tok, task, items, cfg, [])
        zeroed = _scores(models["base"], tok, task, items, cfg, top)
        for heads, x in (("none", none), ("top", zeroed)):
            assert values[ablation_metric("acc", "base", heads, task.name)] == x.mean()
            assert values[ablation_metric("se", "base", heads, task.name)] == item_se(x)
        c = compare(zeroed, none)
        got = [
            values[ablation_metric(s, "base", "top", task.name)]
            for s in ("delta", "delta_lo", "delta_hi", "delta_p")
        ]
        assert got == pytest.approx([c.diff, c.lo, c.hi, c.p], abs=1e-12)
        assert c.lo <= c.diff <= c.hi


def test_the_cross_domain_ablation_task_is_multiple_choice_where_one_is_evaluated():
    """Six conditions score it: a generative task (toy-arith, first in the eval list) would cost
    six generations per item, an MCQ task one forward each."""
    from rankscope.analyze import ablation_tasks
    from rankscope.config import load_config
    from rankscope.plan import make_plan

    cfg = load_config(None, ["seeds=[0]"])
    run = next(r for r in make_plan(cfg) if r.train_task == "toy-med")
    items = {t: [] for t in cfg.tasks.eval}
    assert cfg.tasks.eval[0] == "toy-arith"
    assert ablation_tasks(run, cfg, items) == ["toy-med", "toy-mathmcq"]
    gen_only = load_config(None, ["seeds=[0]", "tasks.eval=[toy-arith, toy-general, toy-med]"])
    run = next(r for r in make_plan(gen_only) if r.train_task == "toy-med")
    assert ablation_tasks(run, gen_only, items) == ["toy-med", "toy-arith"]
