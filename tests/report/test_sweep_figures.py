"""The report's figures under sweeps with several seeds, learning rates and alphas: every
aggregate drawn with its 95% CI (none for one seed), test rows only, each configuration at
the lr selected on validation, and the score-vs-lr and score-vs-α figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.collections import LineCollection
from matplotlib.container import ErrorbarContainer

from rankscope.identity import fmt_lr
from rankscope.report import load_report_data
from rankscope.report.data import ReportData
from rankscope.report.figures import (
    fig_accuracy_vs_rank,
    fig_cross_domain,
    fig_retention_vs_rank,
    rank_series,
    reference_lines,
    render_figures,
)
from rankscope.report.plot import save_figures
from rankscope.report.sweep_figures import (
    SWEEP_FIGURES,
    alpha_rules,
    alpha_series,
    fig_score_vs_alpha,
    fig_score_vs_lr,
    lr_series,
)
from rankscope.stats import mean_ci
from rankscope.store import Store

TRAIN, RET = "tr", "ret"
RANKS = (4, 16)
LRS = (1e-4, 5e-4, 1e-3)
VAL_BY_LR = {1e-4: 0.70, 5e-4: 0.60, 1e-3: 0.50}
"""Validation prefers the smallest lr ..."""
TEST_BY_LR = {1e-4: 0.50, 5e-4: 0.60, 1e-3: 0.80}
"""... while test would prefer the largest: a figure reading test to pick would show 1e-3."""
NOISE = {0: -0.02, 1: 0.0, 2: 0.03}
BASE = {TRAIN: 0.30, RET: 0.60}


def _alpha(rule: str, rank: int) -> float:
    return float(rule[:-1] or 1) * rank if rule.endswith("r") else float(rule)


def on_test(lr: float, rank: int, alpha: float, seed: int) -> float:
    return TEST_BY_LR[lr] + 0.002 * rank + 0.001 * alpha + NOISE[seed]


def on_val(lr: float, rank: int, alpha: float, seed: int) -> float:
    return VAL_BY_LR[lr] + 0.002 * rank + 0.001 * alpha + NOISE[seed]


def on_ret(lr: float, rank: int, alpha: float, seed: int) -> float:
    return BASE[RET] - 0.1 * lr / 1e-3 - 0.0005 * alpha + NOISE[seed]


def _eval(store: Store, run_id: str, task: str, value: float, split: str = "test") -> None:
    store.save_eval(run_id, task, {"acc": (value, 0.01, 100)}, [], split=split)


def build(
    path: Path,
    seeds: tuple[int, ...] = (0, 1, 2),
    lrs: tuple[float, ...] = LRS,
    alphas: tuple[str, ...] = ("2r",),
    full: bool = True,
    with_config: bool = True,
) -> ReportData:
    """A sweep on one train task: base, full SFT and LoRA at RANKS x alphas x lrs x seeds;
    test rows on the train task and the retention task, validation rows on the train task."""
    store = Store(path)
    methods = {"lora": {"alpha": list(alphas), "lr": list(lrs)}} if with_config else {}
    store.set_meta(
        {
            "sweep_name": "sweep-axes",
            "retention_task": RET,
            "eval_tasks": json.dumps([TRAIN, RET]),
            "train_tasks": json.dumps([TRAIN]),
            "config_json": json.dumps({"methods": methods}),
        }
    )
    common = dict(model="toy", config_hash="h", status="done", variant="")
    store.upsert_run(run_id="base", method="base", train_task=None, seed=0, **common)
    for task, v in BASE.items():
        _eval(store, "base", task, v)
    for seed in seeds:
        for lr in lrs:
            if full:
                rid = f"full-lr{lr:g}-s{seed}"
                spec = dict(method="full", train_task=TRAIN, lr=lr, seed=seed)
                store.upsert_run(run_id=rid, trainable_params=10_000, **spec, **common)
                _eval(store, rid, TRAIN, on_test(lr, 32, 0, seed))
                _eval(store, rid, RET, on_ret(lr, 32, 0, seed))
                _eval(store, rid, TRAIN, on_val(lr, 32, 0, seed), split="val")
            for rank in RANKS:
                for rule in alphas:
                    a = _alpha(rule, rank)
                    rid = f"lora-r{rank}-a{a:g}-lr{lr:g}-s{seed}"
                    store.upsert_run(run_id=rid, method="lora", train_task=TRAIN, rank=rank,
                                     alpha=a, lr=lr, seed=seed, trainable_params=100 * rank,
                                     total_params=10_000, **common)  # fmt: skip
                    _eval(store, rid, TRAIN, on_test(lr, rank, a, seed))
                    _eval(store, rid, RET, on_ret(lr, rank, a, seed))
                    _eval(store, rid, TRAIN, on_val(lr, rank, a, seed), split="val")
                    store.save_train_result(rid, {}, [{"step": s, "loss": 1.0 / (s + 1)}
                                                      for s in range(3)])  # fmt: skip
    store.close()
    return load_report_data(path)


def _errorbar_segments(fig) -> int:
    """How many error bars the figure's axes draw (segments of errorbar containers)."""
    n = 0
    for ax in fig.axes:
        for c in ax.containers:
            if isinstance(c, ErrorbarContainer):
                n += sum(len(lc.get_segments()) for lc in c.lines[2])
    return n


def _star_points(fig) -> list[tuple[float, float]]:
    return [
        (x, y)
        for ax in fig.axes
        for line in ax.get_lines()
        if line.get_marker() == "*"
        for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)
    ]


# ------------------------------------------------------------------ presence
def test_no_sweep_figures_without_an_lr_or_alpha_axis(tmp_path: Path) -> None:
    data = build(tmp_path / "s.sqlite", lrs=(1e-4,))
    assert fig_score_vs_lr(data) is None
    assert fig_score_vs_alpha(data) is None
    assert save_figures(data, tmp_path / "figs", SWEEP_FIGURES) == []
    names = {f.name for f in render_figures(data, tmp_path / "figs")}
    assert "accuracy_vs_rank" in names and not names & {"score_vs_lr", "score_vs_alpha"}


def test_lr_figure_only_with_several_lrs_and_alpha_figure_only_with_several_alphas(
    tmp_path: Path,
) -> None:
    lr_only = build(tmp_path / "a.sqlite")
    assert fig_score_vs_lr(lr_only) is not None and fig_score_vs_alpha(lr_only) is None
    alpha_only = build(tmp_path / "b.sqlite", lrs=(1e-4,), alphas=("2r", "16"))
    assert fig_score_vs_lr(alpha_only) is None and fig_score_vs_alpha(alpha_only) is not None
    figs = render_figures(alpha_only, tmp_path / "figs")
    out = next(f for f in figs if f.name == "score_vs_alpha")
    assert out.path.is_file() and out.path.name == "score_vs_alpha.png"
    assert "selected on validation" in out.caption


# ------------------------------------------------------------------ score vs lr
def test_lr_figure_plots_validation_and_marks_the_validation_best_lr(tmp_path: Path) -> None:
    data = build(tmp_path / "s.sqlite")
    lines = lr_series(data)[TRAIN]
    assert [line.label for line in lines] == ["full", "lora r=4", "lora r=16"]
    for line in lines:
        assert line.xs == list(LRS)
        assert line.marked == (1e-4,)  # best on validation; test would pick 1e-3
    r4 = lines[1]
    for p in r4.points:
        ci = mean_ci([on_val(p.x, 4, 8.0, s) for s in (0, 1, 2)])
        assert (p.est, p.lo, p.hi, p.n) == pytest.approx((ci.est, ci.lo, ci.hi, 3))
    fig = fig_score_vs_lr(data)
    stars = _star_points(fig)
    assert len(stars) == 3 and {x for x, _ in stars} == {1e-4}
    assert sorted(y for _, y in stars) == pytest.approx(
        sorted(100 * line.points[0].est for line in lines)
    )
    assert _errorbar_segments(fig) == 3 * 3  # three lines, three lrs, three seeds each
    assert "validation" in fig.get_suptitle() and "3 seeds" in fig.get_suptitle()


def test_lr_figure_without_error_bars_for_one_seed(tmp_path: Path) -> None:
    data = build(tmp_path / "s.sqlite", seeds=(0,))
    lines = lr_series(data)[TRAIN]
    assert all(p.lo is None and p.hi is None and p.n == 1 for s in lines for p in s.points)
    fig = fig_score_vs_lr(data)
    assert _errorbar_segments(fig) == 0
    assert not any(isinstance(c, LineCollection) for ax in fig.axes for c in ax.collections)
    assert len(_star_points(fig)) == 3


# ------------------------------------------------------------------ rank figures
def test_rank_lines_are_test_scores_at_the_selected_lr_with_their_ci(tmp_path: Path) -> None:
    data = build(tmp_path / "s.sqlite")
    (line,) = rank_series(data, TRAIN, TRAIN)
    assert line.label == TRAIN and line.xs == [4, 16]
    for p in line.points:
        rank = int(p.x)
        vals = [on_test(1e-4, rank, 2.0 * rank, s) for s in (0, 1, 2)]
        ci = mean_ci(vals)
        assert (p.est, p.lo, p.hi) == pytest.approx((ci.est, ci.lo, ci.hi))
    (delta,) = rank_series(data, RET, TRAIN, delta=True)
    want = mean_ci([on_ret(1e-4, 4, 8.0, s) - BASE[RET] for s in (0, 1, 2)])
    assert (delta.points[0].est, delta.points[0].lo) == pytest.approx((want.est, want.lo))
    ((label, ci),) = reference_lines(data, TRAIN, TRAIN)
    assert label == f"{TRAIN}: full SFT"
    assert ci.est == pytest.approx(mean_ci([on_test(1e-4, 32, 0, s) for s in (0, 1, 2)]).est)
    fig = fig_accuracy_vs_rank(data)
    assert _errorbar_segments(fig) == 4  # in-domain panel: 2 ranks; retention panel: 2 more
    fig = fig_retention_vs_rank(data)
    assert _errorbar_segments(fig) == 2
    (ax,) = fig.axes
    assert ax.patches, "full SFT's 95% CI is a shaded band"
    assert "mean over 3 seeds, 95% CI" in ax.get_title()


def test_rank_figures_without_error_bars_for_one_seed(tmp_path: Path) -> None:
    data = build(tmp_path / "s.sqlite", seeds=(0,))
    (line,) = rank_series(data, TRAIN, TRAIN)
    assert line.points[0].est == pytest.approx(on_test(1e-4, 4, 8.0, 0))
    assert all(not p.has_ci for p in line.points)
    assert _errorbar_segments(fig_accuracy_vs_rank(data)) == 0
    fig = fig_retention_vs_rank(data)
    assert _errorbar_segments(fig) == 0 and not fig.axes[0].patches
    assert "1 seed, no CI" in fig.axes[0].get_title()


def test_cross_domain_cells_show_the_ci_half_width(tmp_path: Path) -> None:
    def texts(fig) -> list[str]:
        return [t.get_text() for ax in fig.axes for t in ax.texts]

    many = texts(fig_cross_domain(build(tmp_path / "a.sqlite")))
    assert many and all("±" in t for t in many)
    one = texts(fig_cross_domain(build(tmp_path / "b.sqlite", seeds=(0,))))
    assert one and not any("±" in t for t in one)


def test_val_rows_never_reach_the_test_figures(tmp_path: Path) -> None:
    """Give the validation rows of retention absurd values: no test figure may move."""
    data = build(tmp_path / "s.sqlite")
    poisoned = ReportData(
        meta=data.meta,
        runs=data.runs,
        metrics=[*data.metrics, *data.val_metrics]
        + [
            {**m, "task": RET, "value": 0.0}
            for m in data.val_metrics  # a val row on the retention task of every run
        ],
    )
    for task, delta in ((TRAIN, False), (RET, True)):
        assert rank_series(poisoned, task, TRAIN, delta) == rank_series(data, task, TRAIN, delta)


# ------------------------------------------------------------------ α
@pytest.mark.parametrize("with_config", [True, False])
def test_alpha_series_split_the_rank_lines(tmp_path: Path, with_config: bool) -> None:
    data = build(tmp_path / "s.sqlite", alphas=("2r", "16"), with_config=with_config)
    lines = rank_series(data, TRAIN, TRAIN)
    assert [line.label for line in lines] == [f"{TRAIN} α=2r", f"{TRAIN} α=16"]
    by = {line.label: line for line in lines}
    assert by[f"{TRAIN} α=16"].points[1].est == pytest.approx(
        mean_ci([on_test(1e-4, 16, 16.0, s) for s in (0, 1, 2)]).est
    )
    assert by[f"{TRAIN} α=2r"].points[1].est == pytest.approx(
        mean_ci([on_test(1e-4, 16, 32.0, s) for s in (0, 1, 2)]).est
    )


def test_alpha_rules_default_fixed_and_config() -> None:
    empty = ReportData(meta={}, runs=[], metrics=[])
    assert set(alpha_rules(empty, "lora", {(4, 8.0), (16, 32.0)}).values()) == {""}
    names = alpha_rules(empty, "lora", {(4, 8.0), (4, 16.0), (16, 32.0), (16, 16.0)})
    assert names == {(4, 8.0): "α=2r", (16, 32.0): "α=2r", (4, 16.0): "α=16", (16, 16.0): "α=16"}
    assert set(alpha_rules(empty, "lora", {(4, 16.0), (8, 16.0)}).values()) == {"α=16"}
    cfg = ReportData(
        meta={"config_json": json.dumps({"methods": {"lora": {"alpha": ["4r", "2r"]}}})},
        runs=[],
        metrics=[],
    )
    pairs = {(4, 16.0), (4, 8.0), (8, 32.0), (8, 16.0)}  # ambiguous without the config
    assert alpha_rules(cfg, "lora", pairs) == {
        (4, 16.0): "α=4r",
        (8, 32.0): "α=4r",
        (4, 8.0): "α=2r",
        (8, 16.0): "α=2r",
    }


def test_alpha_figure_plots_test_scores_at_the_selected_lr(tmp_path: Path) -> None:
    data = build(tmp_path / "s.sqlite", alphas=("2r", "16"))
    lines = alpha_series(data)
    assert list(lines) == [(TRAIN, "in-domain"), (TRAIN, "retention")]
    r4, r16 = lines[(TRAIN, "in-domain")]
    assert (r4.label, r4.xs, r16.xs) == ("lora r=4", [8.0, 16.0], [16.0, 32.0])
    for p in r16.points:
        ci = mean_ci([on_test(1e-4, 16, p.x, s) for s in (0, 1, 2)])
        assert (p.est, p.lo, p.hi) == pytest.approx((ci.est, ci.lo, ci.hi))
    ret4 = lines[(TRAIN, "retention")][0]
    want = mean_ci([on_ret(1e-4, 4, 16.0, s) - BASE[RET] for s in (0, 1, 2)])
    assert ret4.points[1].est == pytest.approx(want.est)
    fig = fig_score_vs_alpha(data)
    assert _errorbar_segments(fig) == 2 * 2 * 2  # 2 panels x 2 ranks x 2 alphas
    one = fig_score_vs_alpha(build(tmp_path / "one.sqlite", seeds=(0,), alphas=("2r", "16")))
    assert _errorbar_segments(one) == 0


def test_sweep_figures_are_deterministic(tmp_path: Path) -> None:
    data = build(tmp_path / "s.sqlite", alphas=("2r", "16"))
    first = {f.name: f.path.read_bytes() for f in render_figures(data, tmp_path / "a")}
    again = {f.name: f.path.read_bytes() for f in render_figures(data, tmp_path / "b")}
    assert {"score_vs_lr", "score_vs_alpha", "accuracy_vs_rank"} <= set(first)
    assert first == again


def test_without_validation_rows_every_lr_is_drawn_and_no_lr_figure(tmp_path: Path) -> None:
    data = build(tmp_path / "s.sqlite")
    blind = ReportData(meta=data.meta, runs=data.runs, metrics=data.metrics)  # test rows only
    assert fig_score_vs_lr(blind) is None
    lines = rank_series(blind, TRAIN, TRAIN)
    assert [line.label for line in lines] == [f"{TRAIN} lr={fmt_lr(lr)}" for lr in LRS]
    assert [label for label, _ in reference_lines(blind, TRAIN, TRAIN)] == [
        f"{TRAIN}: full SFT lr={fmt_lr(lr)}" for lr in LRS
    ]
