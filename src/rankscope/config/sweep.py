"""`SweepConfig`: the whole sweep, its sections, and the checks that need two of them.

Each section checks its own fields when it is built (config/sections.py); what is left
here is what no single section can see: the sweep's own name and seeds, and whether the
retention task is also trained on (which depends on `data.mmlu_train_subjects`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankscope.config.checks import unique
from rankscope.config.search import SEARCHES, HalvingConfig
from rankscope.config.sections import (
    AnalysisConfig,
    EvalConfig,
    ExecutorConfig,
    MethodsConfig,
    ModelConfig,
    TasksConfig,
    TrainConfig,
)
from rankscope.errors import require, require_one_of
from rankscope.tasks.base import DataConfig


@dataclass
class SweepConfig:
    name: str = "toy"
    """Sweep name; output goes to runs/<name>/ unless output_dir is set."""
    output_dir: str | None = None
    """Output directory of the sweep."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """One run per seed for every (task, method)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    data: DataConfig = field(default_factory=DataConfig)
    methods: MethodsConfig = field(default_factory=MethodsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    search: str = "grid"
    """How the grid is searched: grid (every run at the full budget) | halving (successive
    halving on validation scores, `rankscope.halving`; the promoted runs are the grid's own)."""
    halving: HalvingConfig = field(default_factory=HalvingConfig)

    def __post_init__(self) -> None:
        """The sweep's own fields, then the cross-section rules. The sections are already
        checked: they were built (and so validated) before this runs."""
        require(
            self.name.strip() != "" and "/" not in self.name,
            "name: must be a non-empty name without '/'",
        )
        require(len(self.seeds) > 0, "seeds: give at least one seed")
        unique("seeds", self.seeds, "seed")
        require_one_of("search", self.search, SEARCHES, hint=True)
        retention = self.tasks.retention
        # MMLU may be both: trained on some subjects, retention measured on the others.
        split_mmlu = retention == "mmlu" and bool(self.data.mmlu_train_subjects)
        require(
            retention not in self.tasks.train or split_mmlu,
            f"tasks.retention: {retention!r} is also a training task; retention is measured on"
            " a task no run trains on (for mmlu: name the trained subjects in"
            " data.mmlu_train_subjects)",
        )

    @property
    def out_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
