"""The report's typed run identity: labels and order as before, and no label or id parsing.

The report used to build ``"lora r=8 (rslora)"`` strings, group by them and parse them back.
:class:`MethodKey` replaced that; these tests pin its label, prose and order to the old
string-based functions (copied below as oracles) and check that a run's place in the report
comes from its columns, whatever its run id says.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from rankscope.report import load_report_data
from rankscope.report.derived import cross_domain, param_counts, tradeoffs
from rankscope.report.keys import MethodKey, method_label
from rankscope.report.render import render_report
from rankscope.report.tables import delta_table, results_table
from rankscope.store import Store

OLD_METHOD_ORDER = {"base": 0, "full": 1, "lora": 2}


def old_method_label(run: dict) -> str:
    """The pre-refactor label builder (oracle)."""
    method = run["method"]
    label = f"lora r={run['rank']}" if method == "lora" else str(method)
    return f"{label} ({run['variant']})" if run.get("variant") else label


def old_label_sort_key(label: str) -> tuple:
    """The pre-refactor label parser used for ordering (oracle)."""
    head, _, variant = label.partition(" (")
    if head.startswith("lora r="):
        return (2, variant, int(head.split("=", 1)[1]))
    return (OLD_METHOD_ORDER.get(head, 9), variant, 0)


def old_prose_label(label: str) -> str:
    """The pre-refactor prose rewrite (oracle)."""
    if label.startswith("full"):
        return "full SFT" + label[4:]
    return "LoRA" + label[4:] if label.startswith("lora") else label


def run(method: str, rank: int | None = None, variant: str = "", **kw) -> dict:
    return {"method": method, "rank": rank, "variant": variant, **kw}


BASE = run("base", train_task=None, seed=0)
LORA_8 = run("lora", 8, alpha=16.0, train_task="t", seed=0)
LORA_128_DORA = run("lora", 128, "dora", alpha=256.0, train_task="t", seed=0)
FULL = run("full", lr=1e-5, train_task="t", seed=0)


@pytest.mark.parametrize(
    ("row", "label", "prose"),
    [
        (BASE, "base", "base"),
        (LORA_8, "lora r=8", "LoRA r=8"),
        (LORA_128_DORA, "lora r=128 (dora)", "LoRA r=128 (dora)"),
        (FULL, "full", "full SFT"),
        (run("ia3", variant="x"), "ia3 (x)", "ia3 (x)"),  # a method the report doesn't know
    ],
)
def test_label_and_prose_are_the_old_strings(row: dict, label: str, prose: str) -> None:
    key = MethodKey.of(row)
    assert key.label == label == old_method_label(row) == method_label(row)
    assert key.prose == prose == old_prose_label(label)


def test_order_is_the_old_order() -> None:
    """The old parse kept a ')' on the variant; it sorts before [a-z0-9_-], so the order of
    the fields equals the order of the parsed labels."""
    keys = [MethodKey.of(r) for r in (FULL, LORA_128_DORA, BASE, LORA_8)]
    assert [k.label for k in sorted(keys, key=lambda k: k.sort_key)] == [
        "base",
        "full",
        "lora r=8",
        "lora r=128 (dora)",
    ]
    variants = ["", "dora", "rslora", "rslora-dora", "pissa", "rslora-pissa_niter_4"]
    rows = [BASE, FULL, run("ia3")] + [
        run("lora", r, v) for r, v in itertools.product([1, 2, 8, 16, 64, 128, 256], variants)
    ]
    new = sorted(rows, key=lambda r: MethodKey.of(r).sort_key)
    old = sorted(rows, key=lambda r: old_label_sort_key(old_method_label(r)))
    assert [old_method_label(r) for r in new] == [old_method_label(r) for r in old]


def test_rank_is_part_of_the_key_only_for_ranked_methods() -> None:
    """A full run with a stray rank is still 'full', in the same group as the others."""
    assert MethodKey.of(run("full", 8, lr=1e-5)) == MethodKey.of(FULL) == MethodKey("full", lr=1e-5)
    assert MethodKey.of(LORA_8) == MethodKey("lora", 8, alpha=16.0)
    assert MethodKey.of(LORA_8) != MethodKey.of(run("lora", 8, "dora", alpha=16.0))


def test_alpha_and_lr_are_part_of_the_key_not_of_the_label() -> None:
    """Runs that differ only in alpha or lr never merge into one group. The label never
    shows the lr (a configuration is reported at its selected lr) and shows alpha only when
    it is not the default α = 2r."""
    other_alpha = MethodKey.of(run("lora", 8, alpha=32.0))
    other_lr = MethodKey.of(run("lora", 8, alpha=16.0, lr=1e-3))
    assert len({MethodKey.of(LORA_8), other_alpha, other_lr}) == 3
    assert other_lr.label == MethodKey.of(LORA_8).label == "lora r=8"
    assert other_alpha.label == "lora r=8 α=32"
    assert MethodKey.of(run("lora", 8, "dora", alpha=8.0)).prose == "LoRA r=8 α=8 (dora)"
    assert MethodKey.of(run("lora", 8)).label == "lora r=8"  # no alpha known: unlabelled
    assert other_lr.lr_label == "lora r=8 lr=1e-3" and MethodKey("full").lr_label == "full"
    assert MethodKey.of(run("base", 8, alpha=4.0)) == MethodKey("base")  # no rank, no alpha


# ------------------------------------------------------------------ no id or label parsing
OPAQUE_RUNS = [  # run_id, method, rank, variant; no id says what the run is
    ("zz-base", "base", None, ""),
    ("x", "lora", 8, ""),
    ("a", "lora", 128, "dora"),
    ("toy__lora-r64-a128__s0", "full", None, ""),  # the id lies: the columns win
    ("m", "lora", 4, ""),
]


def _opaque_store(path: Path) -> None:
    store = Store(path)
    store.set_meta({"sweep_name": "opaque", "eval_tasks": '["t"]', "train_tasks": '["t"]'})
    for i, (rid, method, rank, variant) in enumerate(OPAQUE_RUNS):
        tuned = method != "base"
        store.upsert_run(
            run_id=rid,
            model="toy",
            train_task="t" if tuned else None,
            method=method,
            rank=rank,
            alpha=2.0 * rank if rank else None,
            seed=0,
            variant=variant,
            config_hash="h",
            status="done",
            trainable_params=1000 * (i + 1) if tuned else None,
            total_params=10_000,
        )
        store.save_eval(rid, "t", {"acc": (0.5 + 0.1 * i, 0.01, 100)}, [])
    store.close()


def test_runs_are_placed_by_their_columns_not_their_ids(tmp_path: Path) -> None:
    _opaque_store(tmp_path / "results.sqlite")
    data = load_report_data(tmp_path / "results.sqlite")
    order = ["zz-base", "toy__lora-r64-a128__s0", "m", "x", "a"]
    labels = ["base", "full", "lora r=4", "lora r=8", "lora r=128 (dora)"]
    assert [row[:2] for row in results_table(data).rows] == [
        list(p) for p in zip(order, labels, strict=True)
    ]
    assert [row[0] for row in delta_table(data).rows] == order[1:]
    assert [a.label for a in data.agg] == labels
    assert [m.label for m in cross_domain(data.agg, ["t"], ["t"])] == labels[1:]
    assert [t.label for t in tradeoffs(data.agg, None)] == labels[1:]
    assert [(p.label, p.rank) for p in param_counts(data.runs)] == [
        ("full", None),
        ("lora r=4", 4),
        ("lora r=8", 8),
        ("lora r=128 (dora)", 128),
    ]
    x = next(a for a in data.agg if a.run_ids == ("x",))
    assert (x.key, x.delta_mean) == (MethodKey("lora", 8, alpha=16.0), pytest.approx(0.1))
    md = render_report(data, [], [])["md"]
    assert "| x | lora r=8 | t | 0 |" in md
    assert "| lora r=4 | 5,000 | 50.000 | 1 | +40.0 |" in md  # trade-offs, by columns


def test_tradeoffs_count_a_run_trained_on_the_retention_task_as_in_domain():
    """MMLU trained on some subjects, retention measured on the others: the MMLU-trained
    run's MMLU score is its in-domain score, never a retention score (issue 14)."""
    from rankscope.report.data import aggregate, scores

    runs = [
        {"run_id": "base", "method": "base", "status": "done", "train_task": None, "seed": 0},
        {"run_id": "m", "method": "full", "status": "done", "train_task": "mmlu", "seed": 0},
        {"run_id": "g", "method": "full", "status": "done", "train_task": "gsm8k", "seed": 0},
    ]
    value = {("base", "mmlu"): 0.5, ("base", "gsm8k"): 0.1, ("m", "mmlu"): 0.7}
    value |= {("m", "gsm8k"): 0.1, ("g", "mmlu"): 0.3, ("g", "gsm8k"): 0.4}
    metrics = [
        {"run_id": r, "task": t, "metric": "acc", "value": v, "stderr": 0.01, "n": 100}
        for (r, t), v in value.items()
    ]
    (tr,) = tradeoffs(aggregate(scores(runs, metrics)), "mmlu")
    assert tr.in_domain == pytest.approx(((0.7 - 0.5) + (0.4 - 0.1)) / 2)  # both runs' own task
    assert tr.retention == pytest.approx(0.3 - 0.5)  # only the run not trained on mmlu
    assert tr.cross_domain == pytest.approx(0.1 - 0.1)
