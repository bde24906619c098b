"""The report stage: reads only the results store, writes report.md, report.html, figures/.

No torch / transformers here: the report can be (re)written on any machine that holds the
store. Files are staged in a hidden temporary directory inside ``out_dir`` and moved into
place at the end, so a crash never leaves a half-written report behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from rankscope.report.analysis_figures import render_analysis_figures
from rankscope.report.data import ReportData, split_of
from rankscope.report.figures import render_figures
from rankscope.report.render import TEX_NAME, render_report
from rankscope.rundir import replace_dir
from rankscope.store import Store

__all__ = ["load_predictions", "load_report_data", "write_report"]

META_KEYS = (
    "sweep_name",
    "config_json",
    "retention_task",
    "eval_tasks",
    "train_tasks",
    "decontamination",
)


def load_predictions(store: Store, runs: list[dict], metrics: list[dict]) -> dict:
    """(run_id, task, split) -> {item_id: correct} for every finished run's evaluated
    (task, split): the per-item scores the summary's paired tests read. Items without a
    score are left out."""
    done = {r["run_id"] for r in runs if r.get("status") == "done"}
    wanted = {(m["run_id"], m["task"], split_of(m)) for m in metrics if m["run_id"] in done}
    out: dict = {key: {} for key in sorted(wanted)}
    for run_id, task, split, item_id, correct in store.correctness():
        if (run_id, task, split) in out:
            out[(run_id, task, split)][item_id] = correct
    return out


def load_report_data(store_path: Path) -> ReportData:
    """Every row the report needs, read from the store in one go."""
    store_path = Path(store_path)
    if not store_path.is_file():
        raise FileNotFoundError(f"no results store at {store_path}")
    store = Store(store_path)
    try:
        meta = {k: v for k in META_KEYS if (v := store.get_meta(k)) is not None}
        runs, metrics = store.runs(), store.metrics()
        return ReportData(
            meta=meta,
            runs=runs,
            metrics=metrics,
            predictions=load_predictions(store, runs, metrics),
            train_log=store.train_log(),
            analysis=store.analysis(),
            chance=store.chance_levels(),
            fits=store.fits(),
        )
    finally:
        store.close()


def write_report(store_path: Path, out_dir: Path) -> dict[str, Path]:
    """Write report.md, report.html, report_tables.tex and figures/*.png into ``out_dir``.

    Returns their paths under the keys 'md', 'html', 'tex' and 'figures' (the directory).
    """
    out_dir = Path(out_dir)
    data = load_report_data(Path(store_path))
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".report-", dir=out_dir))
    try:
        figs = render_figures(data, stage / "figures")
        analysis_figs = render_analysis_figures(data, stage / "figures") if data.analysis else []
        texts = render_report(data, figs, analysis_figs)
        names = {"md": "report.md", "html": "report.html", "tex": TEX_NAME}
        for key, name in names.items():
            (stage / name).write_text(texts[key], encoding="utf-8")
        replace_dir(stage / "figures", out_dir / "figures")
        for name in names.values():
            os.replace(stage / name, out_dir / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    paths = {key: out_dir / name for key, name in names.items()}
    paths["figures"] = out_dir / "figures"
    return paths
