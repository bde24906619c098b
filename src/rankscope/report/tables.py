"""Tidy tables from the results store's rows, and their Markdown / LaTeX rendering.

Every function here is pure: it takes plain rows (dicts as :class:`rankscope.store.Store`
returns them) and gives back lists of small dataclasses or :class:`Table` objects.
Scores are fractions in [0, 1]; they are shown as % (levels) and pp (changes).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Row = Mapping[str, Any]
METHOD_ORDER = {"base": 0, "full": 1, "lora": 2}


# ------------------------------------------------------------------ labels
def method_label(run: Row) -> str:
    """'base', 'full', 'lora r=8', with the variant appended: 'lora r=8 (rslora)'."""
    method = run["method"]
    label = f"lora r={run['rank']}" if method == "lora" else str(method)
    return f"{label} ({run['variant']})" if run.get("variant") else label


def _run_sort_key(run: Row) -> tuple:
    return (
        METHOD_ORDER.get(run["method"], 9),
        run.get("variant") or "",
        run.get("rank") or 0,
        run.get("train_task") or "",
        run.get("seed") or 0,
        run["run_id"],
    )


def sort_runs(runs: Iterable[Row]) -> list[Row]:
    """Base first, then full, then LoRA by rank; ties by train task and seed."""
    return sorted(runs, key=_run_sort_key)


def label_sort_key(label: str) -> tuple:
    """Orders method labels as base, full, lora r=1, r=2, ... (variants after plain)."""
    head, _, variant = label.partition(" (")
    if head.startswith("lora r="):
        return (2, variant, int(head.split("=", 1)[1]))
    return (METHOD_ORDER.get(head, 9), variant, 0)


def done_runs(runs: Iterable[Row]) -> list[Row]:
    return sort_runs(r for r in runs if r["status"] == "done")


def base_run(runs: Iterable[Row]) -> Row | None:
    return next((r for r in done_runs(runs) if r["method"] == "base"), None)


def primary_metrics(metrics: Iterable[Row]) -> dict[str, str]:
    """Task -> its primary metric: 'acc' when the task has it, else 'em_strict'."""
    names: dict[str, set[str]] = defaultdict(set)
    for m in metrics:
        names[m["task"]].add(m["metric"])
    return {t: "acc" if "acc" in ms else "em_strict" for t, ms in names.items()}


# ------------------------------------------------------------------ scores
def _config(run: Row) -> dict[str, Any]:
    """The fields that name a configuration (what seeds are averaged over)."""
    return {
        "train_task": run.get("train_task"),
        "method": run["method"],
        "label": method_label(run),
        "rank": run.get("rank"),
        "variant": run.get("variant") or "",
    }


@dataclass(frozen=True)
class Score:
    """One run's primary metric on one eval task, and the base model's on the same task."""

    run_id: str
    train_task: str | None
    method: str
    label: str
    rank: int | None
    variant: str
    seed: int | None
    task: str
    metric: str
    value: float
    stderr: float | None
    n: int | None
    base_value: float | None = None

    @property
    def delta(self) -> float | None:
        return None if self.base_value is None else self.value - self.base_value


def scores(runs: Iterable[Row], metrics: Iterable[Row]) -> list[Score]:
    """Primary-metric score per (done run, eval task), with the base value beside it."""
    runs = list(runs)
    metrics = list(metrics)
    primary = primary_metrics(metrics)
    by_run = {r["run_id"]: r for r in done_runs(runs)}
    base = base_run(runs)
    base_vals = {
        m["task"]: m["value"]
        for m in metrics
        if base and m["run_id"] == base["run_id"] and m["metric"] == primary[m["task"]]
    }
    out = []
    for m in metrics:
        run = by_run.get(m["run_id"])
        if run is None or m["metric"] != primary[m["task"]] or m["value"] is None:
            continue
        out.append(
            Score(
                **_config(run),
                run_id=run["run_id"],
                seed=run.get("seed"),
                task=m["task"],
                metric=m["metric"],
                value=float(m["value"]),
                stderr=m.get("stderr"),
                n=m.get("n"),
                base_value=base_vals.get(m["task"]),
            )
        )
    order = {r["run_id"]: i for i, r in enumerate(by_run.values())}
    return sorted(out, key=lambda s: (order[s.run_id], s.task))


@dataclass(frozen=True)
class AggScore:
    """Mean ± std across seeds of one configuration (train task, method label) on one task."""

    train_task: str | None
    label: str
    method: str
    rank: int | None
    variant: str
    task: str
    metric: str
    mean: float
    std: float | None
    delta_mean: float | None
    delta_std: float | None
    n_seeds: int
    run_ids: tuple[str, ...] = field(default=())


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def aggregate(items: Iterable[Score]) -> list[AggScore]:
    """Group scores by (train task, method label, eval task) and average across seeds."""
    groups: dict[tuple, list[Score]] = defaultdict(list)
    for s in items:
        groups[(s.train_task, s.label, s.task)].append(s)
    out = []
    for (_, _, task), group in groups.items():
        first = group[0]
        mean, std = mean_std([s.value for s in group])
        deltas = [s.delta for s in group if s.delta is not None]
        d_mean, d_std = mean_std(deltas) if deltas else (None, None)
        config = {
            k: getattr(first, k) for k in ("train_task", "method", "label", "rank", "variant")
        }
        out.append(
            AggScore(
                **config,
                task=task,
                metric=first.metric,
                mean=mean,
                std=std,
                delta_mean=d_mean,
                delta_std=d_std,
                n_seeds=len(group),
                run_ids=tuple(s.run_id for s in group),
            )
        )
    return sorted(out, key=lambda a: (label_sort_key(a.label), a.train_task or "", a.task))


# ------------------------------------------------------------------ derived tables
@dataclass(frozen=True)
class CrossMatrix:
    """Δ vs base (fraction) per (train task, eval task) for one method label."""

    label: str
    train_tasks: list[str]
    eval_tasks: list[str]
    values: list[list[float | None]]

    def cell(self, train_task: str, eval_task: str) -> float | None:
        return self.values[self.train_tasks.index(train_task)][self.eval_tasks.index(eval_task)]


def cross_domain(
    agg: Iterable[AggScore], train_tasks: Sequence[str], eval_tasks: Sequence[str]
) -> list[CrossMatrix]:
    """One train-task × eval-task matrix of mean Δ vs base per method label (not base)."""
    cells: dict[str, dict[tuple[str, str], float | None]] = defaultdict(dict)
    for a in agg:
        if a.method != "base" and a.train_task is not None:
            cells[a.label][(a.train_task, a.task)] = a.delta_mean
    out = []
    for label in sorted(cells, key=label_sort_key):
        values = [[cells[label].get((t, e)) for e in eval_tasks] for t in train_tasks]
        out.append(CrossMatrix(label, list(train_tasks), list(eval_tasks), values))
    return out


def retention(agg: Iterable[AggScore], retention_task: str | None) -> list[AggScore]:
    """The aggregated scores of the tuned configurations on the retention task."""
    return [a for a in agg if a.task == retention_task and a.method != "base"]


@dataclass(frozen=True)
class Tradeoff:
    """Per method label: mean in-domain, cross-domain and retention Δ over train tasks."""

    label: str
    in_domain: float | None
    cross_domain: float | None
    retention: float | None
    n_train_tasks: int


def _mean_or_none(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def tradeoffs(agg: Iterable[AggScore], retention_task: str | None) -> list[Tradeoff]:
    buckets: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    tasks: dict[str, set[str]] = defaultdict(set)
    for a in agg:
        if a.method == "base" or a.delta_mean is None:
            continue
        kind = (
            "retention" if a.task == retention_task else "in" if a.task == a.train_task else "cross"
        )
        buckets[a.label][kind].append(a.delta_mean)
        tasks[a.label].add(a.train_task or "")
    return [
        Tradeoff(
            label,
            _mean_or_none(b["in"]),
            _mean_or_none(b["cross"]),
            _mean_or_none(b["retention"]),
            len(tasks[label]),
        )
        for label, b in sorted(buckets.items(), key=lambda kv: label_sort_key(kv[0]))
    ]


@dataclass(frozen=True)
class ParamCount:
    label: str
    rank: int | None
    trainable: int | None
    total: int | None

    @property
    def fraction(self) -> float | None:
        return self.trainable / self.total if self.trainable and self.total else None


def param_counts(runs: Iterable[Row]) -> list[ParamCount]:
    """Trainable / total parameters per method label (first done run that reports them)."""
    out: dict[str, ParamCount] = {}
    for r in done_runs(runs):
        label = method_label(r)
        if label not in out and r.get("trainable_params") is not None:
            out[label] = ParamCount(
                label, r.get("rank"), r["trainable_params"], r.get("total_params")
            )
    return [out[k] for k in sorted(out, key=label_sort_key)]


def short_error(error: str | None, limit: int = 300) -> str:
    """The last non-empty line of an error (a traceback's message), shortened."""
    lines = [ln.strip() for ln in (error or "").strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def failed_runs(runs: Iterable[Row]) -> list[Row]:
    """Runs that did not finish: status other than 'done'."""
    return sort_runs(r for r in runs if r["status"] != "done")


# ------------------------------------------------------------------ formatting
def fmt_pct(v: float | None, digits: int = 1) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{100 * v:.{digits}f}"


def fmt_pp(v: float | None, std: float | None = None, digits: int = 1) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    text = f"{100 * v:+.{digits}f}"
    return text if std is None else f"{text} ± {100 * std:.{digits}f}"


def fmt_num(v: float | None, digits: int = 3) -> str:
    """Fixed decimals; thousands separators and no decimals from 10,000 up."""
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.{digits}f}"


def fmt_sig(v: float | None, digits: int = 3) -> str:
    """``digits`` significant figures (for metrics spanning orders of magnitude)."""
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}g}"


def fmt_int(v: int | float | None) -> str:
    return "–" if v is None else f"{int(v):,}"


# ------------------------------------------------------------------ generic table
@dataclass
class Table:
    """A rendered-ready table: cell strings, and which columns are numeric (right-aligned)."""

    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool] | None = None
    caption: str = ""
    bold: set[tuple[int, int]] = field(default_factory=set)

    def is_numeric(self, j: int) -> bool:
        return bool(self.numeric and self.numeric[j])

    @classmethod
    def make(cls, columns: Sequence[str], n_text: int, caption: str = "") -> Table:
        """An empty table whose first ``n_text`` columns are text, the rest numeric."""
        return cls(list(columns), [], [j >= n_text for j in range(len(columns))], caption)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown; cells in ``table.bold`` are wrapped in ``**``."""
    head = "| " + " | ".join(_md_cell(c) for c in table.columns) + " |"
    align = (
        "|"
        + "|".join("---:" if table.is_numeric(j) else ":---" for j in range(len(table.columns)))
        + "|"
    )
    lines = [head, align]
    for i, row in enumerate(table.rows):
        cells = [
            f"**{_md_cell(c)}**" if (i, j) in table.bold and c else _md_cell(c)
            for j, c in enumerate(row)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "–": "--",
    "‖": r"$\|$",
    "…": r"\ldots{}",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: Table, label: str = "") -> str:
    """A booktabs ``table`` environment (needs \\usepackage{booktabs})."""
    spec = "".join("r" if table.is_numeric(j) else "l" for j in range(len(table.columns)))
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in table.columns) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(table.rows):
        cells = [
            rf"\textbf{{{latex_escape(c)}}}" if (i, j) in table.bold else latex_escape(c)
            for j, c in enumerate(row)
        ]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.caption:
        lines.append(rf"\caption{{{latex_escape(table.caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the sweep's data
@dataclass
class ReportData:
    """Everything the report reads from the store, plus the derived score tables."""

    meta: dict[str, str]
    runs: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    train_log: list[dict[str, Any]] = field(default_factory=list)
    analysis: list[dict[str, Any]] = field(default_factory=list)
    chance: dict[str, float] = field(default_factory=dict)
    """Per MCQ task, the score of a uniform random guess (fraction)."""

    def __post_init__(self) -> None:
        self.scores = scores(self.runs, self.metrics)
        self.agg = aggregate(self.scores)

    @property
    def sweep_name(self) -> str:
        return self.meta.get("sweep_name") or "sweep"

    def _config_tasks(self) -> dict[str, Any]:
        """The ``tasks`` section of the stored config (a fallback for missing meta keys)."""
        try:
            tasks = json.loads(self.meta.get("config_json") or "{}").get("tasks")
        except (ValueError, AttributeError):
            return {}
        return tasks if isinstance(tasks, dict) else {}

    def _meta_list(self, key: str, section: str, fallback: Iterable[str]) -> list[str]:
        raw = self.meta.get(key)
        if raw:
            return list(json.loads(raw))
        return list(self._config_tasks().get(section) or []) or sorted(set(fallback))

    @property
    def eval_tasks(self) -> list[str]:
        return self._meta_list("eval_tasks", "eval", (m["task"] for m in self.metrics))

    @property
    def train_tasks(self) -> list[str]:
        trained = (r["train_task"] for r in self.runs if r.get("train_task"))
        return self._meta_list("train_tasks", "train", trained)

    @property
    def retention_task(self) -> str | None:
        return self.meta.get("retention_task") or self._config_tasks().get("retention") or None

    def task_header(self, task: str) -> str:
        return f"{task} (retention)" if task == self.retention_task else task
