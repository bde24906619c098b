"""What a sweep will cost, before any weights exist: trainable parameters and GPU-hours.

The model is instantiated on PyTorch's meta device from its config alone (a local dir, the
HF cache, or a config shipped for the paper's models), so parameter counts are exact for any
architecture and nothing is downloaded. Compute is estimated with the usual transformer rule
(FLOPs per token = 6N for full training, 4N for LoRA: no weight gradients for frozen weights,
2N for a forward pass) at an assumed model-FLOPs utilisation; say so wherever it is shown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankscope import methods
from rankscope.config import PACKAGED_CONFIGS, ModelConfig, SweepConfig
from rankscope.errors import ConfigError, RankscopeError
from rankscope.models import resolve_model_path
from rankscope.plan import RunSpec
from rankscope.sweep import task_context
from rankscope.tasks import TASKS
from rankscope.world.build import toy_model_config
from rankscope.world.generator import spec_for

SHIPPED_MODEL_CONFIGS = PACKAGED_CONFIGS / "model_configs"

# Offline fallbacks when a task's data cannot be read: (train items, test items, tokens/item).
TASK_HINTS: dict[str, tuple[int, int, int]] = {
    "gsm8k": (7473, 1319, 230),
    "mathqa": (29837, 2985, 200),
    "mmlu": (1816, 14042, 120),
    "medmcqa": (182822, 4183, 90),
    "legalmcq": (45000, 3600, 380),
}


def model_config(mcfg: ModelConfig) -> Any:
    """The transformers config of `model.name`, found without downloading anything."""
    from transformers import AutoConfig

    if mcfg.name == "toy":  # known from the world's spec; nothing is built
        return toy_model_config(spec_for(mcfg.world, mcfg.world_seed))
    if mcfg.name in ("tiny-real", "smollm2-135m-instruct"):  # built/converted once, cached
        return AutoConfig.from_pretrained(resolve_model_path(mcfg))
    path = Path(mcfg.name).expanduser()
    if (path / "config.json").is_file():
        return AutoConfig.from_pretrained(path, trust_remote_code=mcfg.trust_remote_code)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(mcfg.name, "config.json")
    if isinstance(cached, str):
        return AutoConfig.from_pretrained(Path(cached).parent)
    shipped = SHIPPED_MODEL_CONFIGS / (mcfg.name.replace("/", "__") + ".json")
    if shipped.is_file():
        data = json.loads(shipped.read_text())
        return AutoConfig.for_model(data.pop("model_type"), **data)
    known = sorted(p.stem.replace("__", "/") for p in SHIPPED_MODEL_CONFIGS.glob("*.json"))
    raise ConfigError(
        f"model.name: no config for {mcfg.name!r} offline (not a local dir, not in the HF "
        f"cache; shipped: {', '.join(known)}). Download it once or point at a local dir."
    )


def meta_model(mcfg: ModelConfig) -> Any:
    """The model with every parameter on the meta device: shapes, no memory, no weights."""
    import torch
    from transformers import AutoModelForCausalLM

    conf = model_config(mcfg)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(conf, trust_remote_code=mcfg.trust_remote_code)


@dataclass(frozen=True)
class RunCost:
    trainable: int
    total: int
    """Parameters the run's model holds: the base model's, plus what its method adds (a LoRA
    adapter), as PEFT and the results store count them (`Method.held_params`)."""
    train_tokens: int
    eval_tokens: int
    gpu_hours: float


def trainable_params(model: Any, run: RunSpec, cfg: SweepConfig) -> int:
    """Parameters the run trains, counted by its method on the meta-device model."""
    return methods.get(run.method).trainable_params(model, run, cfg)


def task_tokens(cfg: SweepConfig, task: str, split: str, words_per_token: float) -> int:
    """Tokens of a task split (read from its data when possible, else TASK_HINTS)."""
    limit = cfg.tasks.max_train_items if split == "train" else cfg.tasks.max_eval_items
    if cfg.data.source == "hub" and task in TASK_HINTS:  # plan must not touch the network
        n_train, n_test, per_item = TASK_HINTS[task]
        n = n_train if split == "train" else n_test
        return min(n, limit or n) * per_item
    try:
        items = TASKS[task].items(split, task_context(cfg), limit)
        words = sum(len((it.prompt + " " + it.completion).split()) for it in items)
        return int(words / words_per_token)
    except (RankscopeError, OSError, ImportError):
        n_train, n_test, per_item = TASK_HINTS.get(task, (1000, 1000, 200))
        n = n_train if split == "train" else n_test
        return min(n, limit or n) * per_item


def sweep_costs(
    cfg: SweepConfig, runs: list[RunSpec], peak_tflops: float, mfu: float
) -> dict[str, RunCost]:
    """Per run: parameters, tokens and estimated GPU-hours (training + its evaluation)."""
    model = meta_model(cfg.model)
    total = sum(p.numel() for p in model.parameters())
    wpt = 1.0 if cfg.model.name == "toy" else 0.75  # BPE: ~0.75 words per token
    eval_tokens = sum(task_tokens(cfg, t, "test", wpt) for t in cfg.tasks.eval)
    flops_per_s = peak_tflops * 1e12 * mfu
    out = {}
    for run in runs:
        method = methods.get(run.method)
        trainable = method.trainable_params(model, run, cfg)
        tokens = 0
        if run.train_task:
            tokens = task_tokens(cfg, run.train_task, "train", wpt) * cfg.train.epochs
            tokens = int(tokens / (1 - run.replay))  # replay: general items of similar length
        flops = method.flops_per_token * total * tokens + 2 * total * eval_tokens
        held = method.held_params(total, trainable)
        out[run.run_id] = RunCost(trainable, held, tokens, eval_tokens, flops / flops_per_s / 3600)
    return out


def human(n: float) -> str:
    """12_345_678 -> '12.3M'."""
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:g}"
