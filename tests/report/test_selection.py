"""Learning-rate selection on validation items, and test tables that never see val rows.

The classic leak: picking the lr that is best *on test* and reporting that test number. The
store below makes the two criteria disagree, so a report that peeks at test shows the
wrong lr.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from report_synth import Run, flip, write_store
from scipy import stats as st

from rankscope.report import load_report_data
from rankscope.report.data import ReportData
from rankscope.report.fmt import fmt_pp
from rankscope.report.keys import MethodKey
from rankscope.report.render import render_report
from rankscope.report.selection import (
    group_key,
    impossible,
    is_selected,
    lr_rows,
    selected_lrs,
    shown_agg,
)
from rankscope.report.tables import (
    cross_domain_table,
    delta_table,
    lr_table,
    results_table,
    retention_table,
    tradeoff_table,
)

N = 100
TASKS = ["tA", "tR"]
LORA8 = MethodKey("lora", 8, alpha=16.0)
LORA16_A16 = MethodKey("lora", 16, alpha=16.0)  # not the default alpha = 2r
BASE_VEC = np.array([1] * 40 + [0] * (N - 40))
GAIN = {1e-4: [20, 22, 24], 1e-3: [40, 42, 44]}  # test items gained in-domain, per seed
VAL_GAIN = {1e-4: [30, 30, 31], 1e-3: [10, 12, 11]}  # ... on validation: the other way round
VAL_BASE = np.array([1] * 17 + [0] * (N - 17))  # 17 %: a number no test cell has


def _runs(with_val: bool = True) -> list[Run]:
    base_val = {"tA": VAL_BASE} if with_val else {}
    runs = [Run("base", "base", test={t: BASE_VEC for t in TASKS}, val=base_val)]
    for lr, gains in GAIN.items():
        for seed, g in enumerate(gains):
            val = {"tA": flip(VAL_BASE, up=VAL_GAIN[lr][seed])} if with_val else {}
            test = {"tA": flip(BASE_VEC, up=g), "tR": flip(BASE_VEC, down=seed + 1)}
            rid = f"lora8-lr{lr:g}-s{seed}"
            runs.append(Run(rid, "lora", "tA", 8, 16.0, lr, seed, test=test, val=val))
    val16 = {"tA": flip(VAL_BASE, up=1)} if with_val else {}
    test16 = {"tA": flip(BASE_VEC, up=5), "tR": BASE_VEC}
    runs.append(Run("lora16", "lora", "tA", 16, 16.0, 1e-4, 0, test=test16, val=val16))
    return runs


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> ReportData:
    path = tmp_path_factory.mktemp("sel") / "results.sqlite"
    write_store(path, _runs(), ["tA"], TASKS, "tR")
    return load_report_data(path)


def _val_mean(lr: float) -> float:
    return float(np.mean([17 + g for g in VAL_GAIN[lr]]) / N)


def test_lr_is_selected_on_validation_even_when_test_disagrees(data) -> None:
    assert _val_mean(1e-4) > _val_mean(1e-3)  # validation prefers 1e-4, test prefers 1e-3
    sel = selected_lrs(data)
    assert sel == {("tA", LORA8): 1e-4, ("tA", LORA16_A16): 1e-4}
    assert is_selected(next(a for a in data.agg if a.key.lr == 1e-4), sel)
    assert not is_selected(next(a for a in data.agg if a.key.lr == 1e-3), sel)
    assert group_key(MethodKey("lora", 8, alpha=16.0, lr=1e-3)) == LORA8


def test_tables_show_the_selected_lr_only(data) -> None:
    chosen = {f"lora8-lr0.0001-s{s}" for s in range(3)}
    for table in (results_table(data), delta_table(data)):
        ids = {row[0] for row in table.rows}
        assert chosen <= ids and not any("lr0.001-" in i for i in ids)
    gains = np.array(GAIN[1e-4]) / N
    half = st.t.ppf(0.975, 2) * gains.std(ddof=1) / np.sqrt(3)
    row = next(r for r in cross_domain_table(data).rows if r[0] == "lora r=8")
    assert row[1:4] == ["tA", "3", fmt_pp(gains.mean(), half)]
    trade = next(r for r in tradeoff_table(data).rows if r[0] == "lora r=8")
    assert trade[3] == "3" and trade[4] == fmt_pp(gains.mean(), half)
    assert {r[0] for r in retention_table(data).rows} == {"lora r=8", "lora r=16 α=16"}


def test_lr_table_marks_the_selection_and_shows_test_for_information(data) -> None:
    rows = lr_rows(data)
    assert [(r.key.label, r.key.lr, r.selected) for r in rows] == [
        ("lora r=8", 1e-4, True),
        ("lora r=8", 1e-3, False),
        ("lora r=16 α=16", 1e-4, True),
    ]
    assert rows[0].val.est == pytest.approx(_val_mean(1e-4))
    assert rows[1].test_in_domain.est == pytest.approx(0.4 + np.mean(GAIN[1e-3]) / N)
    table = lr_table(data)
    assert [r[2] for r in table.rows] == ["1e-4", "1e-3", "1e-4"]
    assert [r[-1] for r in table.rows] == ["yes", "", "yes"]
    md = render_report(data, [], [])["md"]
    assert "### Learning rate selection" in md


def test_val_rows_never_enter_the_test_tables(data) -> None:
    assert {m["split"] for m in data.metrics} == {"test"}
    assert {m["split"] for m in data.val_metrics} == {"val"}
    assert all(s.value != pytest.approx(0.17) for s in data.scores)
    base = next(a for a in data.agg if a.key.info.baseline and a.task == "tA")
    assert base.mean == pytest.approx(0.4)
    md = render_report(data, [], [])["md"]
    results = md[md.index("## Results") : md.index("### Learning rate selection")]
    assert f"{100 * _val_mean(1e-4):.1f}" in md.split("### Learning rate selection")[1]
    val_delta = fmt_pp(_val_mean(1e-4) - 0.17)
    for val in ("17.0", f"{100 * _val_mean(1e-4):.1f}", val_delta):  # val levels and Δ
        assert val not in results


def test_old_rows_without_a_split_are_test_rows() -> None:
    runs = [{"run_id": "b", "method": "base", "status": "done", "train_task": None}]
    row = {"run_id": "b", "task": "t", "metric": "acc", "value": 0.5, "stderr": None, "n": 1}
    data = ReportData(meta={}, runs=runs, metrics=[row])
    assert [s.value for s in data.scores] == [0.5] and data.val_metrics == []


def test_without_validation_several_lrs_cannot_be_selected(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    write_store(path, _runs(with_val=False), ["tA"], TASKS, "tR")
    data = load_report_data(path)
    sel = selected_lrs(data)
    assert sel == {("tA", LORA8): None, ("tA", LORA16_A16): 1e-4}  # one lr: that lr
    assert impossible(data) == [("tA", LORA8)]
    labels = [a.key.lr_label for a in shown_agg(data) if a.task == "tA"]
    assert labels == ["base", "lora r=8 lr=1e-4", "lora r=8 lr=1e-3", "lora r=16 α=16"]
    assert "Without validation scores" in lr_table(data).caption
    md = render_report(data, [], [])["md"]
    assert "no lr could be selected for: LoRA r=8 on tA" in md


def test_ties_go_to_the_smaller_lr() -> None:
    def run(rid: str, lr: float) -> dict:
        return {"run_id": rid, "method": "lora", "rank": 4, "alpha": 8.0, "lr": lr,
                "train_task": "t", "seed": 0, "status": "done"}  # fmt: skip

    def val(rid: str) -> dict:
        return {"run_id": rid, "task": "t", "split": "val", "metric": "acc", "value": 0.7}

    data = ReportData(meta={}, runs=[run("x", 1e-3), run("y", 1e-4)], metrics=[val("x"), val("y")])
    assert selected_lrs(data) == {("t", MethodKey("lora", 4, alpha=8.0)): 1e-4}
