"""From sweep to decision: the trade-off options, their Pareto front, the recommendation
under limits, `rankscope recommend`, and the report's headline, on a store whose per-item
predictions are known, so every gain, cost and verdict is computed here by hand."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from report_synth import Run, flip, write_store
from typer.testing import CliRunner

from rankscope.cli import app, main
from rankscope.report import load_report_data
from rankscope.report.decision import (
    Limits,
    confirm_half,
    decide,
    decisions,
    selection_half,
)
from rankscope.report.figures import render_figures
from rankscope.report.headline import HEADLINE_FIGURE, decision_line, fig_tradeoff
from rankscope.report.keys import MethodKey
from rankscope.report.render import render_report
from rankscope.report.significance import recommendations

N = 200
BASE_VEC = np.array([1] * 80 + [0] * (N - 80))  # 40 % right on every task and split
FULL, R8, R64, BASE = MethodKey("full"), MethodKey("lora", 8, "", 16.0), None, MethodKey("base")
R64 = MethodKey("lora", 64, "", 128.0)


def _forget(k: int) -> np.ndarray:
    """Retention correctness with the first `k` right items of the base made wrong."""
    return flip(BASE_VEC, down=k)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """On validation of tA: base 80, full SFT 140, LoRA r=8 138 (two items from full: not
    significant), r=64 100 (significantly worse). Retention tR: full forgets 40 items, r=8
    forgets 4, r=64 forgets 60 (dominated by full: less gain, more cost)."""
    same = {"tA": BASE_VEC, "tX": BASE_VEC, "tR": BASE_VEC}
    runs = [
        Run("base", "base", test=same, val={"tA": BASE_VEC}),
        Run("full", "full", "tA", lr=1e-5, val={"tA": flip(BASE_VEC, up=60)},
            test={**same, "tA": flip(BASE_VEC, up=50), "tR": _forget(40)}),
        Run("r8", "lora", "tA", rank=8, alpha=16.0, lr=1e-4, val={"tA": flip(BASE_VEC, up=58)},
            test={**same, "tA": flip(BASE_VEC, up=45), "tR": _forget(4)}),
        Run("r64", "lora", "tA", rank=64, alpha=128.0, lr=1e-4,
            val={"tA": flip(BASE_VEC, up=20)},
            test={**same, "tA": flip(BASE_VEC, up=20), "tR": _forget(60)}),
    ]  # fmt: skip
    path = tmp_path_factory.mktemp("decision") / "results.sqlite"
    write_store(path, runs, ["tA"], ["tA", "tX", "tR"], "tR")
    return path


@pytest.fixture(scope="module")
def data(store):
    return load_report_data(store)


def _half_cost(k: int, half) -> float:
    """Base minus a run that forgot the first k right items, on one half of tR's items."""
    ids = [f"tR/{i:04d}" for i in range(N)]
    mask = np.array([half("tR", i) for i in ids])
    return float(np.mean(BASE_VEC[mask]) - np.mean(_forget(k)[mask]))


def test_the_halves_split_the_retention_items_once_and_for_all() -> None:
    ids = [f"tR/{i:04d}" for i in range(N)]
    sel = [i for i in ids if selection_half("tR", i)]
    assert 0.4 * N < len(sel) < 0.6 * N
    assert all(not confirm_half("tR", i) for i in sel)
    assert all(confirm_half("tR", i) for i in set(ids) - set(sel))
    # a fixed hash (crc32), not Python's per-process salted hash()
    assert [selection_half("tR", i) for i in ids[:8]] == [selection_half("tR", i) for i in ids[:8]]


def test_gain_cost_front_and_params_computed_by_hand(data) -> None:
    d = decide(data, "tA")
    by = {o.key: o for o in d.options}
    assert set(by) == {BASE, FULL, R8, R64}
    assert by[FULL].gain.diff == pytest.approx(60 / N)
    assert by[R8].gain.diff == pytest.approx(58 / N) and by[BASE].gain is None
    for key, k in ((FULL, 40), (R8, 4), (R64, 60)):
        assert by[key].cost.diff == pytest.approx(_half_cost(k, selection_half))
        assert by[key].cost.n_items < N  # the selection half only
    assert by[R8].params == 8000 and by[BASE].params == 0
    # r=64 is dominated by full SFT; the base model only while r=8 forgets something
    front = {FULL, R8} | ({BASE} if _half_cost(4, selection_half) > 0 else set())
    assert {k for k, o in by.items() if o.on_front} == front


def test_recommendation_without_limits_is_the_reports_validation_choice(data) -> None:
    d = decide(data, "tA")
    (rec,) = recommendations(data)
    assert d.best.key == rec.best.key == FULL
    assert [o.key for o in d.equivalent] == [R8]  # two validation items apart
    assert {o.key for o in d.worse} == {BASE, R64}
    assert d.cheapest.key == R8  # the equivalent with the lower retention cost
    # the recommendation's cost confirmed on the other half of the items
    assert d.confirmed.retention.diff == pytest.approx(_half_cost(40, confirm_half))
    assert d.confirmed.retention.n_items + d.best.cost.n_items == N
    assert d.confirmed.in_domain.diff == pytest.approx(50 / N)  # test split, in-domain


def test_the_cheapest_equivalents_cost_is_confirmed_on_the_other_half(data) -> None:
    d = decide(data, "tA")
    assert d.cheapest.key == R8 and d.cheapest_confirmed is not None
    assert d.cheapest_confirmed.retention.diff == pytest.approx(_half_cost(4, confirm_half))
    line = decision_line(d)
    confirmed = 100 * _half_cost(4, confirm_half)
    assert f"{100 * _half_cost(4, selection_half):+.1f} pp on the selection half" in line
    assert f"{confirmed:+.1f} pp [" in line and "on the confirmation half" in line


def test_an_option_without_shared_items_is_never_read_as_costing_nothing(tmp_path) -> None:
    """r=8 has no retention predictions: it must not count as forgetting 0 pp (and so win
    any retention limit and 'cheapest'); it is left out of the front and never admissible."""
    same = {"tA": BASE_VEC, "tR": BASE_VEC}
    runs = [
        Run("base", "base", test=same, val={"tA": BASE_VEC}),
        Run("full", "full", "tA", lr=1e-5, val={"tA": flip(BASE_VEC, up=60)},
            test={**same, "tR": _forget(10)}),
        Run("r8", "lora", "tA", rank=8, alpha=16.0, lr=1e-4, val={"tA": flip(BASE_VEC, up=59)},
            test={"tA": BASE_VEC}),
    ]  # fmt: skip
    path = tmp_path / "results.sqlite"
    write_store(path, runs, ["tA"], ["tA", "tR"], "tR")
    d = decide(load_report_data(path), "tA", Limits(max_retention_loss=50.0))
    r8 = next(o for o in d.options if o.key == R8)
    assert r8.cost is None and r8.unmeasured == "no tR items shared with the base model"
    assert r8.excluded == r8.unmeasured and not r8.on_front
    assert d.best.key == FULL and d.cheapest.key == FULL


def test_limits_exclude_and_move_the_recommendation(data) -> None:
    d = decide(data, "tA", Limits(max_retention_loss=10.0))
    by = {o.key: o for o in d.options}
    assert by[FULL].excluded.startswith("retention cost +") and by[R64].excluded
    assert not by[R8].excluded and not by[BASE].excluded
    assert d.best.key == R8 and [o.key for o in d.worse] == [BASE]
    d = decide(data, "tA", Limits(max_params=10_000))
    assert (
        d.best.key == R8 and "trainable parameters" in {o.key: o for o in d.options}[FULL].excluded
    )
    d = decide(data, "tA", Limits(max_params=0))  # only the base model is left
    assert d.best.key == BASE and d.confirmed.in_domain is None


def test_recommend_command_prints_the_decision_and_writes_json(store, tmp_path) -> None:
    out = tmp_path / "decision.json"
    r = CliRunner().invoke(
        app, ["recommend", str(store.parent), "--max-retention-loss", "10", "--json", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "LoRA r=8, lr 1e-4" in r.output and "outside the limits" in r.output
    (doc,) = json.loads(out.read_text())
    best = doc["options"][doc["recommended"]]
    assert (best["method"], best["rank"], best["lr"]) == ("lora", 8, 1e-4)
    assert doc["limits"]["max_retention_loss_pp"] == 10.0
    full = next(o for o in doc["options"] if o["method"] == "full")
    assert full["excluded"] and full["retention_cost_selection_half"]["diff_pp"] > 10


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-retention-loss", "-1"], "--max-retention-loss: must be >= 0"),
        (["--max-params", "-5"], "--max-params: must be >= 0"),
    ],
)
def test_recommend_refuses_bad_limits(store, args, message, monkeypatch, capsys) -> None:
    code, err = _main(["recommend", str(store.parent), *args], monkeypatch, capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_recommend_refuses_a_dir_without_a_store(tmp_path, monkeypatch, capsys) -> None:
    args = ["recommend", str(tmp_path), "--json", str(tmp_path / "x.json")]
    code, err = _main(args, monkeypatch, capsys)
    assert code == 2 and "no results.sqlite" in err
    assert not (tmp_path / "x.json").exists()


def _main(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """The console entry point in this process: (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["rankscope", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as e:
        main()
    return int(e.value.code), capsys.readouterr().err


def test_report_opens_with_the_answer_and_collapses_the_full_tables(data, tmp_path) -> None:
    figs = render_figures(data, tmp_path / "figures")
    assert HEADLINE_FIGURE in {f.name for f in figs}
    texts = render_report(data, figs, [])
    html = texts["html"]
    first_h2 = re.search(r"<h2>(.*?)</h2>", html).group(1)
    assert first_h2 == "Recommendation"
    head = html[html.index("<h2>Recommendation</h2>") : html.index("<h2>Summary</h2>")]
    assert head.index("<ul><li><strong>tA</strong>") < head.index('alt="Gain vs retention cost"')
    # every full results table is inside a closed <details>; the summary's stay open
    results = html[html.index("<h2>Results</h2>") :]
    assert results.count("<table>") == results.count("<details>") > 0
    assert "<details open" not in html
    md = texts["md"]
    assert md.index("## Recommendation") < md.index("## Summary") < md.index("## Results")
    assert decision_line(decisions(data)[0]) in md


def test_tradeoff_figure_draws_every_option(data) -> None:
    fig = fig_tradeoff(data)
    (ax,) = [a for a in fig.axes if a.get_visible()]
    labels = {t.get_text() for t in ax.texts}
    assert labels == {"base", "full SFT", "r=8", "r=64"}
    assert fig_tradeoff(data, Limits(max_retention_loss=5.0)) is not None
