"""The report stage end to end on a synthetic but realistic results store."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from rankscope.report import load_report_data, write_report
from rankscope.report.tables import (
    Table,
    cross_domain,
    latex_escape,
    method_label,
    to_latex,
    to_markdown,
)
from rankscope.store import Store

TRAIN = ["toy-med", "toy-arith"]
EVAL = ["toy-med", "toy-arith", "toy-general"]
RETENTION = "toy-general"
RANKS = [4, 16, 64]
GENERATIVE = {"toy-arith"}
LAYERS, HEADS = 3, 4
OPTIONS = {"toy-med": (4,), "toy-general": (4, 4, 5)}  # per MCQ item, cycled: chance 1/n
FAILED_ID = "toy-arith__lora-r64-a128__s1"
FAILED_MSG = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_ITEMS = 210  # a multiple of the option-count cycle (3)


def _run_specs() -> list[dict]:
    specs = [dict(run_id="base", method="base", train_task=None, rank=None, seed=0)]
    for task in TRAIN:
        specs.append(
            dict(run_id=f"{task}__full__s0", method="full", train_task=task, rank=None, seed=0)
        )
        for r in RANKS:
            specs.append(
                dict(
                    run_id=f"{task}__lora-r{r}-a{2 * r}__s0",
                    method="lora",
                    train_task=task,
                    rank=r,
                    alpha=2.0 * r,
                    seed=0,
                )
            )
    specs.append(
        dict(
            run_id="toy-med__lora-r16-a32__s1",
            method="lora",
            train_task="toy-med",
            rank=16,
            alpha=32.0,
            seed=1,
        )
    )
    return specs


def _score(rng: np.random.Generator, base: float, spec: dict, task: str) -> float:
    """Plausible effects: in-domain gain, small cross-domain change, retention loss."""
    if spec["method"] == "base":
        return base
    strength = 1.0 if spec["method"] == "full" else math.log2(spec["rank"]) / 6
    if task == spec["train_task"]:
        shift = 0.25 * strength
    elif task == RETENTION:
        shift = -0.12 * strength
    else:
        shift = -0.03 * strength
    return float(np.clip(base + shift + rng.normal(0, 0.01), 0.0, 1.0))


def _spectral_rows(rng: np.random.Generator, rid: str, scale: float) -> list[tuple]:
    rows = []
    for layer in range(LAYERS):
        for mod in ("q_proj", "v_proj"):
            name = f"model.layers.{layer}.self_attn.{mod}"
            vals = {
                "fro": scale * rng.uniform(0.9, 1.1),
                "rel_fro": 0.01 * scale,
                "stable_rank": scale * rng.uniform(1, 2),
                "sim_left": 1 - 0.05 * scale,
                "effective_rank": 2 * scale,
                "intruders_0.5": float(rng.integers(0, 4)),
                "intruders_0.9": float(rng.integers(0, 8)),
                f"type:{mod}": 1.0,
            }
            rows += [(rid, "spectral", name, layer, -1, k, v) for k, v in vals.items()]
    return rows


def _attention_rows(rng: np.random.Generator, rid: str, scale: float, tuned: bool) -> list:
    rows = []
    for layer in range(LAYERS):
        for head in range(HEADS):
            stats = {"entropy": rng.uniform(1.0, 2.0), "sink_mass": rng.random()}
            if tuned:
                stats["js_div"] = 0.01 * scale * rng.random()
            rows += [(rid, "attention", "attn", layer, head, k, v) for k, v in stats.items()]
        if tuned:
            rows.append((rid, "cka", "hidden", layer, -1, "cka", 1 - 0.02 * scale * layer))
    return rows


def _ablation_rows(rng: np.random.Generator, rid: str) -> list[tuple]:
    """Head-ablation rows as `analyze.ablation_rows` stores them, from random item scores."""
    from rankscope.analyze import condition_metrics

    rows: list[tuple] = []
    for t in EVAL:
        for model in ("tuned", "base"):
            scores = {h: rng.integers(0, 2, 40).astype(float) for h in ("none", "top", "random")}
            values = condition_metrics(t, model, scores).items()
            rows += [(rid, "ablation", "heads", -1, -1, k, v) for k, v in values]
    return rows


def _analysis_rows(rng: np.random.Generator, specs: list[dict]) -> list[tuple]:
    rows: list[tuple] = []
    for s in specs:
        rid, tuned = s["run_id"], s["method"] != "base"
        scale = 3.0 if s["method"] == "full" else math.log(s["rank"] or 1) + 0.5
        rows += _attention_rows(rng, rid, scale, tuned)
        if tuned:
            rows += _spectral_rows(rng, rid, scale)
        if s["rank"] == 64 or s["method"] == "full":
            rows += _ablation_rows(rng, rid)
    return rows


def _fit_rows() -> list[tuple]:
    """The store's `fits`: one norm-vs-rank fit per train task and module type."""
    fit = {"log_a": 0.5, "log_b": 1.0, "log_r2": 0.97, "pow_c": 0.8, "pow_p": 0.4, "pow_r2": 0.9}
    return [
        (task, "lora", "", mod, k, v)
        for task in TRAIN
        for mod in ("q_proj", "v_proj", "all")
        for k, v in fit.items()
    ]


def _write_run(
    store: Store, rng: np.random.Generator, s: dict, base: dict[str, float]
) -> dict[str, float]:
    """One finished run: its row, loss curve and metrics; returns its primary scores."""
    params = {"base": None, "full": 5_000_000}.get(s["method"], 2048 * (s["rank"] or 0))
    store.upsert_run(
        model="toy",
        config_hash="h",
        status="done",
        variant="",
        trainable_params=params,
        total_params=5_000_000,
        train_seconds=float(rng.uniform(10, 100)),
        **s,
    )
    if s["method"] != "base":
        log = [
            {"step": k, "loss": 3.0 * math.exp(-k / 20) + rng.normal(0, 0.05)}
            for k in range(0, 100, 5)
        ]
        store.save_train_result(s["run_id"], {"final_train_loss": log[-1]["loss"]}, log)
    scores = {}
    for t in EVAL:
        correct = _correct(rng, _score(rng, base[t], s, t), t)
        v = scores[t] = float(correct.mean())
        se, n = math.sqrt(v * (1 - v) / N_ITEMS), N_ITEMS
        if t in GENERATIVE:
            metrics = {"em_strict": (v, se, n), "em_flexible": (min(1, v + 0.05), se, n)}
            preds = [
                {"item_id": f"{t}/{i}", "pred": "3", "gold": "3", "correct": int(c),
                 "detail": {"text": "#### 3", "flexible": "3"}}
                for i, c in enumerate(correct)
            ]  # fmt: skip
        else:
            metrics = {"acc": (v, se, n), "acc_norm": (v, se, n)}
            sizes = OPTIONS[t]
            preds = [
                {"item_id": f"{t}/{i}", "pred": "A", "gold": "A", "correct": int(c),
                 "detail": {"logprobs": [-1.0] * sizes[i % len(sizes)]}}
                for i, c in enumerate(correct)
            ]  # fmt: skip
        store.save_eval(s["run_id"], t, metrics, preds)
    for t in [s["train_task"]] if s["train_task"] else TRAIN:  # validation: the train task
        correct = _correct(rng, _score(rng, base[t], s, t), f"val:{t}")
        v = float(correct.mean())
        preds = [{"item_id": f"{t}/v{i}", "pred": "A", "gold": "A", "correct": int(c)}
                 for i, c in enumerate(correct)]  # fmt: skip
        metric = "em_strict" if t in GENERATIVE else "acc"
        store.save_eval(s["run_id"], t, {metric: (v, 0.0, N_ITEMS)}, preds, split="val")
    return scores


def _correct(rng: np.random.Generator, acc: float, items: str) -> np.ndarray:
    """Per-item 0/1: an item is right when its (fixed) ease is below `acc`, then 5% of items
    flip at random, so runs are paired on items and differ by noise and by `acc`."""
    ease = np.random.default_rng(zlib.crc32(items.encode())).random(N_ITEMS)
    return ((ease < acc) ^ (rng.random(N_ITEMS) < 0.05)).astype(int)


def build_store(path: Path, with_analysis: bool = True) -> dict[str, dict[str, float]]:
    """A sweep's store; returns the primary metric written per run and eval task."""
    rng = np.random.default_rng(1234)
    store = Store(path)
    tasks = {"train": TRAIN, "eval": EVAL, "retention": RETENTION}
    store.set_meta(
        {
            "sweep_name": "unit",
            "retention_task": RETENTION,
            "eval_tasks": json.dumps(EVAL),
            "train_tasks": json.dumps(TRAIN),
            "config_json": json.dumps({"tasks": tasks}),
        }
    )
    base = {t: float(rng.uniform(0.3, 0.6)) for t in EVAL}
    specs = _run_specs()
    written = {s["run_id"]: _write_run(store, rng, s, base) for s in specs}
    error = f"Traceback (most recent call last):\n  ...\n{FAILED_MSG}\n"
    store.upsert_run(
        run_id=FAILED_ID,
        model="toy",
        train_task="toy-arith",
        method="lora",
        rank=64,
        alpha=128.0,
        seed=1,
        variant="",
        config_hash="h",
        status="failed",
        error=error,
    )
    if with_analysis:
        store.save_analysis(_analysis_rows(rng, specs))
        store.save_fits(_fit_rows())
    store.close()
    return written


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[dict[str, Path], dict[str, dict[str, float]], Path]:
    root = tmp_path_factory.mktemp("sweep")
    written = build_store(root / "results.sqlite")
    paths = write_report(root / "results.sqlite", root / "report")
    return paths, written, root / "results.sqlite"


def md_table(md: str, heading: str) -> list[dict[str, str]]:
    """The first Markdown table after ``heading`` (a whole line where one matches, else the
    first line that starts with it), as dicts keyed by column header."""
    all_lines = md.splitlines()
    at = next((i for i, ln in enumerate(all_lines) if ln == heading), None)
    if at is None:
        at = next(i for i, ln in enumerate(all_lines) if ln.startswith(heading))
    lines = all_lines[at:]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    rows = []
    for ln in lines[start:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip().strip("*") for c in ln.strip("|").split(" | ")])
    header = rows[0]
    return [dict(zip(header, r, strict=True)) for r in rows[2:]]


def pp(x: float) -> str:
    return f"{100 * x:+.1f}"


# ------------------------------------------------------------------ files
def test_files_exist_and_html_is_self_contained(sweep) -> None:
    paths, _, _ = sweep
    assert set(paths) >= {"md", "html", "figures"}
    for key in ("md", "html", "tex"):
        assert paths[key].is_file() and paths[key].stat().st_size > 1000
    html = paths["html"].read_text()
    assert 'src="http' not in html and 'href="http' not in html and "<link" not in html
    assert html.count("data:image/png;base64,") == len(list(paths["figures"].glob("*.png")))
    assert not [p for p in paths["md"].parent.iterdir() if p.name.startswith(".")]


def test_every_run_id_in_markdown(sweep) -> None:
    paths, written, _ = sweep
    md = paths["md"].read_text()
    for run_id in [*written, FAILED_ID]:
        assert run_id in md


def test_figures_are_nontrivial_pngs(sweep) -> None:
    paths, _, _ = sweep
    names = {p.stem for p in paths["figures"].glob("*.png")}
    assert names >= {
        "accuracy_vs_rank",
        "retention_vs_rank",
        "cross_domain",
        "params_vs_rank",
        "loss_curves",
        "delta_norm_vs_rank",
        "drift_per_layer",
        "intruders_vs_rank",
        "rank_measures",
        "attention_entropy_change",
        "attention_js",
        "head_ablation",
        "cka_per_layer",
    }
    for png in paths["figures"].glob("*.png"):
        raw = png.read_bytes()
        assert raw[:8] == PNG_MAGIC
        width, height = struct.unpack(">II", raw[16:24])
        assert width >= 400 and height >= 300 and len(raw) > 15_000, png.name
    md = paths["md"].read_text()
    for name in names:
        assert f"](figures/{name}.png)" in md


# ------------------------------------------------------------------ numbers
def test_retention_change_matches_independent_computation(sweep) -> None:
    paths, written, _ = sweep
    rows = md_table(paths["md"].read_text(), "### Change vs base per run")
    col = f"{RETENTION} (retention)"
    assert {r["run"] for r in rows} == set(written) - {"base"}
    for r in rows:
        expected = written[r["run"]][RETENTION] - written["base"][RETENTION]
        assert r[col] == pp(expected)
        for task in EVAL:  # every other column is run − base too
            assert r[f"{task} (retention)" if task == RETENTION else task] == pp(
                written[r["run"]][task] - written["base"][task]
            )


def test_cross_domain_matrix_cells(sweep) -> None:
    _, written, store_path = sweep
    data = load_report_data(store_path)
    mats = {m.label: m for m in cross_domain(data.agg, TRAIN, EVAL)}
    assert set(mats) == {"full", "lora r=4", "lora r=16", "lora r=64"}
    for train in TRAIN:
        for task in EVAL:
            got = mats["lora r=4"].cell(train, task)
            want = written[f"{train}__lora-r4-a8__s0"][task] - written["base"][task]
            assert got == pytest.approx(want, abs=1e-12)
    seeds = [written[f"toy-med__lora-r16-a32__s{s}"]["toy-arith"] for s in (0, 1)]
    assert mats["lora r=16"].cell("toy-med", "toy-arith") == pytest.approx(
        np.mean(seeds) - written["base"]["toy-arith"], abs=1e-12
    )
    # the failed toy-arith r=64 seed contributes nothing
    assert mats["lora r=64"].cell("toy-arith", "toy-med") == pytest.approx(
        written["toy-arith__lora-r64-a128__s0"]["toy-med"] - written["base"]["toy-med"]
    )


def test_seeds_are_aggregated(sweep) -> None:
    paths, written, store_path = sweep
    data = load_report_data(store_path)
    agg = next(
        a
        for a in data.agg
        if a.label == "lora r=16" and a.train_task == "toy-med" and a.task == RETENTION
    )
    vals = [written[f"toy-med__lora-r16-a32__s{s}"][RETENTION] for s in (0, 1)]
    assert agg.n_seeds == 2
    assert agg.mean == pytest.approx(np.mean(vals))
    assert agg.std == pytest.approx(np.std(vals, ddof=1))
    base = written["base"][RETENTION]
    rows = md_table(paths["md"].read_text(), "### Retention")
    row = next(r for r in rows if r["method"] == "lora r=16" and r["train task"] == "toy-med")
    assert row["seeds"] == "2"
    half = stats.t.ppf(0.975, 1) * np.std(vals, ddof=1) / np.sqrt(2)  # 95% t-interval, 2 seeds
    assert agg.delta_ci.half_width == pytest.approx(half)
    assert agg.ci.lo == pytest.approx(np.mean(vals) - half)
    assert row["Δ vs base (pp)"] == f"{pp(np.mean(vals) - base)} ± {100 * half:.1f}"
    single = next(r for r in rows if r["method"] == "full" and r["train task"] == "toy-arith")
    assert single["seeds"] == "1" and "±" not in single["Δ vs base (pp)"]


def test_primary_metric_is_em_strict_for_generative_tasks(sweep) -> None:
    _, _, store_path = sweep
    data = load_report_data(store_path)
    metric = {s.task: s.metric for s in data.scores}
    assert metric == {"toy-med": "acc", "toy-arith": "em_strict", "toy-general": "acc"}


def test_failed_run_listed_with_error(sweep) -> None:
    paths, _, store_path = sweep
    md = paths["md"].read_text()
    rows = md_table(md, "## Failed runs")
    assert [r["run"] for r in rows] == [FAILED_ID]
    assert rows[0]["error"] == FAILED_MSG and rows[0]["status"] == "failed"
    assert FAILED_MSG in paths["html"].read_text()
    data = load_report_data(store_path)
    assert FAILED_ID not in {s.run_id for s in data.scores}


def test_chance_levels_come_from_the_option_counts_in_the_store(sweep) -> None:
    paths, _, store_path = sweep
    data = load_report_data(store_path)
    # toy-general's items have 4, 4 and 5 options: chance is the mean of 1/4, 1/4, 1/5
    assert data.chance == pytest.approx({"toy-med": 0.25, "toy-general": (0.25 + 0.25 + 0.2) / 3})
    md = paths["md"].read_text()
    summary = md[md.index("## Summary") : md.index("## Results")]
    line = next(x for x in summary.splitlines() if x.startswith("- **toy-med** (acc)"))
    assert line.endswith(f": base {100 * data_base(data, 'toy-med'):.1f} %, chance 25.0 %.")
    assert "chance 23.3 %" in summary  # toy-general
    assert "toy-arith" in summary and "chance" not in next(
        x for x in summary.splitlines() if x.startswith("- **toy-arith** (em_strict)")
    )  # generative: no chance level


def data_base(data, task: str) -> float:
    return next(a.mean for a in data.agg if a.task == task and a.method == "base")


def test_summary_states_tested_differences_and_retention_cost(sweep) -> None:
    paths, written, _ = sweep
    md = paths["md"].read_text()
    summary = md[md.index("## Summary") : md.index("## Results")]
    assert "**unit**" in summary and "mean ± std" not in summary
    for task in EVAL:
        assert f"**{task}" in summary
    for train in TRAIN:  # every configuration's differences, tested, per train task
        rows = md_table(summary, f"*Trained on {train}:")
        assert [r["configuration"] for r in rows] == ["full", "lora r=4", "lora r=16", "lora r=64"]
        assert all(r["retention Δ vs base"] != "–" for r in rows)
        head = md[md.index("## Recommendation") : md.index("## Summary")]
        assert any(ln.startswith(f"- **{train}**: **") for ln in head.splitlines())
    trade = {r["method"]: r for r in md_table(summary, "### Trade-offs")}
    full = np.mean([written[f"{t}__full__s0"][RETENTION] for t in TRAIN])
    assert trade["full"]["retention Δ (pp)"] == pp(full - written["base"][RETENTION])
    assert trade["full"]["seeds"] == "1" and trade["lora r=16"]["seeds"] == "1–2"


def test_analysis_section_and_latex(sweep) -> None:
    paths, _, _ = sweep
    md = paths["md"].read_text()
    assert "## Analysis" in md and "### Spectral summary" in md
    rows = md_table(md, "### Spectral summary")
    assert {"rel_fro", "stable_rank", "effective_rank", "sim_left", "intruders_0.5"} <= set(rows[0])
    tex = paths["tex"].read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"toy-med\_\_full\_\_s0" in tex


# ------------------------------------------------------------------ variants of the store
def test_no_analysis_rows_means_no_analysis_section(tmp_path: Path) -> None:
    build_store(tmp_path / "results.sqlite", with_analysis=False)
    paths = write_report(tmp_path / "results.sqlite", tmp_path / "report")
    md = paths["md"].read_text()
    assert "## Analysis" not in md and "## Figures" in md
    names = {p.stem for p in paths["figures"].glob("*.png")}
    assert names == {
        "tradeoff",
        "accuracy_vs_rank",
        "retention_vs_rank",
        "cross_domain",
        "params_vs_rank",
        "loss_curves",
    }


def test_crash_leaves_previous_report_untouched(tmp_path: Path, monkeypatch) -> None:
    build_store(tmp_path / "results.sqlite", with_analysis=False)
    out = tmp_path / "report"
    paths = write_report(tmp_path / "results.sqlite", out)
    before = {
        p: p.read_bytes() for p in [paths["md"], paths["html"], *paths["figures"].glob("*.png")]
    }

    def boom(*_args, **_kw):
        raise RuntimeError("crash while rendering")

    monkeypatch.setattr("rankscope.report.render_report", boom)
    with pytest.raises(RuntimeError, match="crash while rendering"):
        write_report(tmp_path / "results.sqlite", out)
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["figures", "report.md", "report.html", "report_tables.tex"]
    )
    monkeypatch.undo()
    again = write_report(tmp_path / "results.sqlite", out)  # and a rerun replaces cleanly
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [again["md"].name, again["html"].name, again["tex"].name, "figures"]
    )


def test_missing_store_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "nope.sqlite", tmp_path / "report")
    assert not (tmp_path / "nope.sqlite").exists()


def test_report_does_not_import_torch(sweep, tmp_path: Path) -> None:
    _, _, store_path = sweep
    code = (
        "import sys; from pathlib import Path; import rankscope.report as r; "
        f"r.write_report(Path({str(store_path)!r}), Path({str(tmp_path / 'out')!r})); "
        "bad = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "report.html").is_file()


# ------------------------------------------------------------------ renderers
def test_markdown_and_latex_rendering() -> None:
    t = Table(["run", "Δ (pp)"], [["a_b|c", "+1.0 ± 0.5"]], [False, True], "cap 50%", bold={(0, 1)})
    md = to_markdown(t)
    assert md.splitlines()[1] == "|:---|---:|"
    assert "a_b\\|c" in md and "**+1.0 ± 0.5**" in md
    tex = to_latex(t, "tab:x")
    assert r"\begin{tabular}{lr}" in tex and r"a\_b|c" in tex
    assert r"\textbf{+1.0 $\pm$ 0.5}" in tex and r"cap 50\%" in tex and r"\label{tab:x}" in tex
    assert latex_escape("#&$") == r"\#\&\$"
    assert method_label({"method": "lora", "rank": 8, "variant": "rslora"}) == "lora r=8 (rslora)"


def test_task_lists_fall_back_to_config_json() -> None:
    from rankscope.report.tables import ReportData

    cfg = {"tasks": {"train": ["t1"], "eval": ["t1", "k"], "retention": "k"}}
    data = ReportData(meta={"config_json": json.dumps(cfg)}, runs=[], metrics=[])
    assert (data.train_tasks, data.eval_tasks, data.retention_task) == (["t1"], ["t1", "k"], "k")
    bare = ReportData(
        meta={},
        runs=[],
        metrics=[
            {"run_id": "base", "task": "z", "metric": "acc", "value": 0.5, "stderr": None, "n": 1}
        ],
    )
    assert (bare.eval_tasks, bare.retention_task, bare.sweep_name) == (["z"], None, "sweep")


def test_summary_lists_the_retention_subjects(tmp_path: Path) -> None:
    """The retention subjects are the retention task's per-group metrics: the summary names
    them, so a reader sees which MMLU subjects measured forgetting."""
    from rankscope.report.content import summary_blocks
    from rankscope.report.tables import ReportData

    cfg = {"tasks": {"train": ["medmcqa"], "eval": ["mmlu", "medmcqa"], "retention": "mmlu"}}
    row = {"run_id": "base", "task": "mmlu", "stderr": None, "n": 10, "value": 0.3}
    metrics = [{**row, "metric": m} for m in ("acc", "acc|marketing", "acc|abstract_algebra")] + [
        {**row, "task": "medmcqa", "metric": "acc|ignored"}
    ]
    run = {"run_id": "base", "method": "base", "train_task": None, "status": "done"}
    data = ReportData(meta={"config_json": json.dumps(cfg)}, runs=[run], metrics=metrics)
    assert data.retention_groups == ["abstract_algebra", "marketing"]
    intro = summary_blocks(data, {"tradeoffs": None})[1].text
    assert "Retention is scored on the 2 mmlu subjects" in intro
    assert "abstract_algebra, marketing." in intro


def test_retention_beyond_accuracy_table_has_the_measures_with_their_intervals() -> None:
    """Gold log-prob change and KL(base ‖ tuned) per configuration: the seed t-interval with
    two seeds, the items' normal interval with one (the change adds the base's error)."""
    from rankscope.report.tables import ReportData, drift_table

    cfg = {"tasks": {"train": ["t"], "eval": ["t", "g"], "retention": "g"}}

    def run(run_id, method, seed, rank=None):
        return dict(
            run_id=run_id,
            method=method,
            train_task=None if method == "base" else "t",
            rank=rank,
            alpha=None if rank is None else 2.0 * rank,
            lr=1e-3,
            seed=seed,
            status="done",
            model="toy",
            variant="",
        )

    runs = [
        run("base", "base", 0),
        run("f0", "full", 0),
        run("f1", "full", 1),
        run("l0", "lora", 0, 8),
    ]
    vals = {  # run -> (acc, gold_logprob, its se, kl, its se)
        "base": (0.9, -0.50, 0.02, None, None),
        "f0": (0.8, -0.90, 0.03, 0.30, 0.01),
        "f1": (0.7, -1.10, 0.03, 0.50, 0.02),
        "l0": (0.85, -0.60, 0.04, 0.10, 0.005),
    }
    metrics = []
    for rid, (acc, gold, gse, kl, kse) in vals.items():
        metrics.append(dict(run_id=rid, task="g", metric="acc", value=acc, stderr=0.01, n=100))
        metrics.append(
            dict(run_id=rid, task="g", metric="gold_logprob", value=gold, stderr=gse, n=100)
        )
        if kl is not None:
            metrics.append(dict(run_id=rid, task="g", metric="kl_base", value=kl, stderr=kse, n=64))
    data = ReportData(meta={"config_json": json.dumps(cfg)}, runs=runs, metrics=metrics)
    table = drift_table(data)
    assert table is not None
    rows = {r[0]: r for r in table.rows}
    t = stats.t.ppf(0.975, 1)
    full = rows["full"]
    # full: deltas -0.40, -0.60 -> mean -0.5, half = t * sd / sqrt(2); KL 0.3, 0.5
    half = t * np.std([-0.4, -0.6], ddof=1) / np.sqrt(2)
    assert full[4] == f"-0.500 ± {half:.3f}"
    assert full[5] == f"0.4000 ± {t * np.std([0.3, 0.5], ddof=1) / np.sqrt(2):.4f}"
    assert full[2] == "2"
    lora = rows["lora r=8"]
    assert lora[4] == f"-0.100 ± {1.96 * math.hypot(0.04, 0.02):.3f}"
    assert lora[5] == f"0.1000 ± {1.96 * 0.005:.4f}"
    assert lora[3] == "-5.0"  # one seed: accuracy change without a seed interval


def test_summary_states_what_decontamination_dropped() -> None:
    from rankscope.decontam import Decontamination, Overlap
    from rankscope.report.content import decontamination_line
    from rankscope.report.tables import ReportData

    result = Decontamination(
        [
            Overlap("mathqa", "mathqa", 3, 500, [("mathqa/dev/8", "mathqa/test/25")]),
            Overlap("mathqa", "mmlu", 0, 500, []),
        ],
        {"mathqa": 497},
    )
    data = ReportData(meta={"decontamination": result.to_json()}, runs=[], metrics=[])
    line = decontamination_line(data)
    assert line is not None and "3 of 500 mathqa training items overlap mathqa" in line
    assert "mmlu" not in line and "dropped from training" in line
    clean = Decontamination([Overlap("t", "e", 0, 10, [])], {"t": 10})
    assert "nothing was dropped" in decontamination_line(
        ReportData(meta={"decontamination": clean.to_json()}, runs=[], metrics=[])
    )
    assert decontamination_line(ReportData(meta={}, runs=[], metrics=[])) is None


def test_summary_states_the_gsm8k_setting() -> None:
    from rankscope.report.content import gsm8k_setting
    from rankscope.report.tables import ReportData

    def data(shots):
        cfg = {"tasks": {"train": ["mathqa"], "eval": ["gsm8k", "mathqa"], "retention": "mmlu"}}
        cfg["data"] = {"gsm8k_shots": shots, "source": "files"}
        return ReportData(meta={"config_json": json.dumps(cfg)}, runs=[], metrics=[])

    assert gsm8k_setting(data(5)).startswith("5-shot, exemplars = first 5 train items")
    assert gsm8k_setting(data(0)).startswith("zero-shot")
    cfg = {"tasks": {"train": ["t"], "eval": ["t"], "retention": "t"}}
    assert (
        gsm8k_setting(ReportData(meta={"config_json": json.dumps(cfg)}, runs=[], metrics=[]))
        is None
    )


def test_generative_tasks_show_strict_beside_flexible() -> None:
    """lm-eval's gsm8k reports both extractions; so does the report, mean ± CI over seeds."""
    from rankscope.report.tables import ReportData, generative_table

    cfg = {"tasks": {"train": ["t"], "eval": ["gsm8k", "t"], "retention": "t"}}
    runs = [
        dict(
            run_id=f"f{s}",
            method="full",
            train_task="t",
            rank=None,
            alpha=None,
            lr=1e-3,
            seed=s,
            status="done",
            model="toy",
            variant="",
        )
        for s in (0, 1)
    ]
    vals = {"f0": (0.10, 0.30), "f1": (0.20, 0.50)}
    metrics = [
        dict(run_id=r, task="gsm8k", metric=m, value=v, stderr=0.01, n=100)
        for r, pair in vals.items()
        for m, v in zip(("em_strict", "em_flexible"), pair, strict=True)
    ] + [dict(run_id=r, task="t", metric="acc", value=0.5, stderr=0.01, n=100) for r in vals]
    data = ReportData(meta={"config_json": json.dumps(cfg)}, runs=runs, metrics=metrics)
    table = generative_table(data)
    assert table is not None
    assert table.columns[3:] == ["gsm8k strict (%)", "gsm8k flexible (%)"]
    half = stats.t.ppf(0.975, 1) * np.std([0.1, 0.2], ddof=1) / np.sqrt(2)
    (row,) = table.rows
    assert row[:3] == ["full", "t", "2"]
    assert row[3] == f"15.0 ± {100 * half:.1f}" and row[4].startswith("40.0 ± ")
    only_mcq = ReportData(meta={"config_json": json.dumps(cfg)}, runs=runs, metrics=metrics[4:])
    assert generative_table(only_mcq) is None
