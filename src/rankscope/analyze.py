"""The analyze stage: spectral analysis of ΔW and attention analysis, rows into the store.

Per run and module: W₀ from the base model, W₁ = W₀ + ΔW with ΔW read by the run's method
(`Method.delta_w`: peft's `get_delta_weight` for LoRA, whose spectrum comes from its factors;
the saved weights for full SFT). W₀'s SVD is computed once per base model and shared by all
runs. Each (run, module) is stored in one transaction, so the stage resumes per module.

`rankscope.analysis.spectral` (scipy) and `rankscope.analysis.attention` (torch) are imported
inside the functions that use them: the driver imports this module, and `rankscope --help`
must not pay for them.
"""

from __future__ import annotations

import random
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
    rows = [
        r for r in store.analysis("attention") if r["run_id"] == run_id and r["metric"] == "js_div"
    ]
    rows.sort(key=lambda r: -r["value"])
    return [(r["layer"], r["head"]) for r in rows[:n]]


def ablation_rows(
    run: RunSpec,
    model: Any,
    tok: Any,
    tasks: list[tuple[Any, list]],
    store: Rows,
    cfg: SweepConfig,
) -> None:
    """Zero each of the top-H most-changed heads; store the accuracy change per task."""
    from rankscope.analysis.attention import ablate_heads

    if (
        not methods.get(run.method).trains
        or cfg.analysis.ablate_top == 0
        or store.has_analysis(run.run_id, "ablation")
    ):
        return
    rows = []
    for task, items in tasks:
        before = _primary_score(model, tok, task, items, cfg)
        for layer, head in top_heads(store, run.run_id, cfg.analysis.ablate_top):
            with ablate_heads(model, [(layer, head)]):
                after = _primary_score(model, tok, task, items, cfg)
            rows.append(
                (run.run_id, "ablation", "attn", layer, head, f"delta:{task.name}", after - before)
            )
    store.save_analysis(rows)


def _primary_score(model: Any, tok: Any, task: Any, items: list, cfg: SweepConfig) -> float:
    """The task's headline metric (acc, or strict exact match), scored as evaluate scores it."""
    e = cfg.eval
    m = evaluate(
        model, tok, task, items, e.batch_size, e.max_new_tokens, chat=cfg.data.chat_template
    )[0]
    return m["acc"][0] if "acc" in m else m["em_strict"][0]


def ablation_tasks(run: RunSpec, cfg: SweepConfig, items: dict[str, list]) -> list[str]:
    """The run's in-domain task and one cross-domain task (retention if nothing else)."""
    others = [t for t in cfg.tasks.eval if t not in (run.train_task, cfg.tasks.retention)]
    chosen = [run.train_task] if run.train_task in items else []
    return chosen + [others[0] if others else cfg.tasks.retention]


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
    n = cfg.analysis.ablation_items
    tasks = [(TASKS[t], items[t][:n]) for t in ablation_tasks(run, cfg, items)]
    ablation_rows(run, model, tok, tasks, store, cfg)


def analyze_unit(run: RunSpec, run_dir: Path, cfg: SweepConfig, items: dict[str, list]) -> None:
    """A worker's analyze stage: every analysis of one run not yet in its analysis/ dir."""
    base, tok, path = load_base(cfg.model)
    batches = probe_batches(cfg, items, tok)
    analyze_run(run, run_dir, cfg, AnalysisFiles(run_dir), base, tok, str(path), batches, items)
