"""The parts of `rankscope probe` every predictor shares: spectrum -> rank, the rank grid,
the result types and options, the probe's batches (see `rankscope.probe`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rankscope.config import SweepConfig
from rankscope.errors import ConfigError, RankscopeError
from rankscope.targets import matched_layers, resolve_targets

DEFAULT_STEPS = 32
DEFAULT_ENERGY = 0.9
AGGREGATE = "median over modules"
PREDICTORS = ("probe", "eva", "adalora")
COMPARABLE = PREDICTORS[1:]
FULL = "full"


# ------------------------------------------------------------------ spectrum -> rank
def energy_rank(sv: Any, fraction: float = DEFAULT_ENERGY) -> int:
    """Smallest k whose top-k squared singular values hold `fraction` of the total energy
    (relative slack 1e-12 for rounding); 0 for a zero matrix."""
    s = np.sort(np.abs(np.asarray(sv, dtype=np.float64).ravel()))[::-1]
    energy = s**2
    total = float(energy.sum())
    if total <= 0:
        return 0
    k = int(np.searchsorted(np.cumsum(energy), fraction * total * (1 - 1e-12), side="left"))
    return min(k + 1, s.size)


def stable_rank(sv: Any) -> float:
    """‖M‖_F² / ‖M‖_2² from the singular values; 0 for a zero matrix."""
    s = np.abs(np.asarray(sv, dtype=np.float64).ravel())
    top = float(s.max()) if s.size else 0.0
    return float((s**2).sum() / top**2) if top > 0 else 0.0


def to_grid(rank: float, grid: list[int], full: bool) -> str:
    """The smallest grid rank >= `rank` (as text); above the grid 'full' when full SFT is
    in the config, else the largest rank."""
    for r in sorted(grid):
        if r >= math.ceil(rank):
            return str(r)
    return FULL if full else str(max(grid))


def grid_of(cfg: SweepConfig) -> list[str]:
    """The choices a prediction can take: the LoRA ranks, then 'full' when enabled."""
    return [str(r) for r in sorted(cfg.methods.lora.ranks)] + (
        [FULL] if cfg.methods.full.enabled else []
    )


# ------------------------------------------------------------------ results
@dataclass
class Prediction:
    """One predictor's answer for one (train task, seed), with what it cost."""

    predictor: str
    choice: str | None
    """A grid rank ('32') or 'full'; None when the predictor failed (see `note`)."""
    median_rank: float | None
    """The median over modules of the per-module rank (probe: energy rank; EVA and AdaLoRA:
    the rank peft assigned)."""
    median_stable_rank: float | None
    seconds: float
    tokens: int
    steps: int
    modules: dict[str, dict[str, float]] = field(default_factory=dict)
    note: str = ""


@dataclass
class ProbeRow:
    task: str
    seed: int
    predictions: dict[str, Prediction]


@dataclass
class ProbeOptions:
    steps: int = DEFAULT_STEPS
    energy: float = DEFAULT_ENERGY
    compare: tuple[str, ...] = ()
    budget_rank: int | None = None
    """The rank budget EVA (r) and AdaLoRA (target_r) redistribute; None: the grid's middle."""
    eva_rho: float = 2.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise RankscopeError(f"--steps: must be >= 1, got {self.steps}")
        if not 0 < self.energy <= 1:
            raise RankscopeError(f"--energy: must be in (0, 1], got {self.energy}")
        for name in self.compare:
            if name not in COMPARABLE:
                raise RankscopeError(
                    f"--compare: {name!r} is not one of {', '.join(COMPARABLE)} "
                    "(comma-separated, e.g. --compare eva,adalora)"
                )
        if self.eva_rho < 1:
            raise RankscopeError(f"--eva-rho: must be >= 1, got {self.eva_rho}")
        if self.budget_rank is not None and self.budget_rank < 1:
            raise RankscopeError(f"--budget-rank: must be >= 1, got {self.budget_rank}")


def parse_compare(text: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.strip() for p in (text or "").split(",") if p.strip()))


def check_config(cfg: SweepConfig) -> None:
    """What the probe needs of a config: train tasks and a LoRA rank grid."""
    if not cfg.tasks.train:
        raise ConfigError("tasks.train: empty; the probe predicts a rank per train task")
    if not cfg.methods.lora.enabled:
        raise ConfigError("methods.lora.enabled: false; the probe predicts a rank of its grid")


def budget_rank(cfg: SweepConfig, opts: ProbeOptions) -> int:
    ranks = sorted(cfg.methods.lora.ranks)
    return opts.budget_rank or ranks[len(ranks) // 2]


def summarise(
    predictor: str,
    per_module: dict[str, dict[str, float]],
    cfg: SweepConfig,
    cost: tuple[float, int, int],
    note: str = "",
) -> Prediction:
    """A Prediction from per-module {'rank': .., 'stable_rank': ..}: medians, the grid choice."""
    ranks = [m["rank"] for m in per_module.values()]
    stable = [m["stable_rank"] for m in per_module.values() if "stable_rank" in m]
    med = float(np.median(ranks)) if ranks else None
    choice = to_grid(med, cfg.methods.lora.ranks, cfg.methods.full.enabled) if ranks else None
    return Prediction(
        predictor,
        choice,
        med,
        float(np.median(stable)) if stable else None,
        *cost,
        per_module,
        note,
    )


# ------------------------------------------------------------------ the batches
def probe_batches(cfg: SweepConfig, task: str, seed: int, steps: int, tok: Any) -> list[dict]:
    """`steps` padded batches of the task's training items as the run unit encodes them,
    in a seeded shuffle (a new permutation per pass over the items)."""
    import torch
    from transformers import DataCollatorForSeq2Seq

    from rankscope.sweep import sweep_for
    from rankscope.train import encode

    items = sweep_for(cfg).items(task, "train")
    rows = encode(items, tok, cfg.train.max_seq_len, cfg.data.chat_template)
    size = cfg.train.batch_size * cfg.train.grad_accum
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < steps * size:
        order += torch.randperm(len(rows), generator=gen).tolist()
    collate = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    return [
        dict(collate([rows[i] for i in order[s * size : (s + 1) * size]])) for s in range(steps)
    ]


def tokens_of(batches: list[dict]) -> int:
    return int(sum(int(b["attention_mask"].sum()) for b in batches))


# ------------------------------------------------------------------ the modules
def target_names(model: Any, cfg: SweepConfig) -> list[str]:
    """The qualified names of the config's LoRA target modules in `model`."""
    targets = resolve_targets(model.config.model_type, cfg.methods.lora.target_modules)
    return [name for name, _, _ in matched_layers(model, targets)]
