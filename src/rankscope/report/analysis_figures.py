"""The analysis figures of the report (spectra of ΔW, attention, CKA, head ablation).

Each figure exists only when the store holds the rows it needs; with no analysis rows at all
:func:`render_analysis_figures` returns an empty list and the report has no analysis section.
The figures themselves live in :mod:`.spectral_figures` and :mod:`.attention_figures`; this
module is their list, in the order the report shows them.
"""

from __future__ import annotations

from pathlib import Path

from rankscope.report.attention_figures import (
    fig_ablation,
    fig_cka,
    fig_entropy_change,
    fig_js_heatmaps,
)
from rankscope.report.data import ReportData
from rankscope.report.plot import Builder, FigureOut, save_figures
from rankscope.report.spectral_figures import (
    fig_drift_heatmaps,
    fig_intruders_vs_rank,
    fig_norm_vs_rank,
    fig_rank_measures,
)

ANALYSIS_FIGURES: list[tuple[str, str, Builder]] = [
    ("delta_norm_vs_rank", "Update norm vs LoRA rank", fig_norm_vs_rank),
    ("drift_per_layer", "Per-layer drift", fig_drift_heatmaps),
    ("intruders_vs_rank", "Intruder dimensions vs LoRA rank", fig_intruders_vs_rank),
    ("rank_measures", "Stable and effective rank of ΔW", fig_rank_measures),
    ("attention_entropy_change", "Attention entropy change", fig_entropy_change),
    ("attention_js", "Attention change per head", fig_js_heatmaps),
    ("head_ablation", "Head ablation", fig_ablation),
    ("cka_per_layer", "Representation similarity (CKA)", fig_cka),
]


def render_analysis_figures(data: ReportData, out_dir: Path) -> list[FigureOut]:
    return save_figures(data, out_dir, ANALYSIS_FIGURES)
