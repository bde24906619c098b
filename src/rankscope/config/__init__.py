"""Sweep configuration: YAML -> typed dataclasses, each section checking its own fields.

Defaults are the paper's (arXiv 2512.15634): LoRA r in {8,16,32,64,128}, alpha = 2r,
dropout 0.05 on q/k/v/o_proj; full SFT with AdamW at lr 5e-5; 3 epochs; batch 2 x grad-accum
4; linear schedule with 10% warmup; bf16 where the device supports it. The embedded toy
sweep (`configs/toy.yaml`) overrides only what a 1M-parameter model needs.

Layout: `sections` (one dataclass per section, validated in `__post_init__`), `sweep`
(`SweepConfig` and the cross-section checks), `load` (YAML + `--set` -> SweepConfig),
`reference` (the documented key table). `DataConfig` lives in `rankscope.tasks.base`, below
both config and the task loaders; it is re-exported here.
"""

from __future__ import annotations

from rankscope.config.load import (
    DEFAULT_CONFIG,
    PACKAGED_CONFIGS,
    dump_yaml,
    load_config,
    parse_set,
    read_yaml,
    sourced,
)
from rankscope.config.reference import config_reference
from rankscope.config.search import HalvingConfig
from rankscope.config.sections import (
    AnalysisConfig,
    EvalConfig,
    ExecutorConfig,
    FullConfig,
    LoraConfig,
    MethodsConfig,
    ModelConfig,
    TasksConfig,
    TrainConfig,
)
from rankscope.config.sweep import SweepConfig
from rankscope.tasks.base import DataConfig

__all__ = [
    "DEFAULT_CONFIG",
    "PACKAGED_CONFIGS",
    "AnalysisConfig",
    "DataConfig",
    "EvalConfig",
    "ExecutorConfig",
    "FullConfig",
    "HalvingConfig",
    "LoraConfig",
    "MethodsConfig",
    "ModelConfig",
    "SweepConfig",
    "TasksConfig",
    "TrainConfig",
    "config_reference",
    "dump_yaml",
    "load_config",
    "parse_set",
    "read_yaml",
    "sourced",
]
