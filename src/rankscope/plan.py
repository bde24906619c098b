"""The grid: base model x train task x method x seed, with stable readable run ids.

A run id names what the run *is* (`toy-arith__lora-r16-a32__s0`); its config hash records
everything that shaped it, so a finished run is reused only when nothing relevant changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from rankscope.config import SweepConfig

BASE_RUN_ID = "base"


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    method: str  # base | full | lora
    train_task: str | None
    seed: int
    rank: int | None = None
    alpha: float | None = None
    lr: float | None = None
    variant: str = ""

    def identity(self, cfg: SweepConfig) -> dict[str, Any]:
        """Everything that determines this run's results (its config hash covers it)."""
        ident: dict[str, Any] = {"spec": asdict(self), "model": asdict(cfg.model)}
        ident["model"].pop("cache_dir", None)  # where the cache lives does not change results
        ident["data"] = asdict(cfg.data)  # where items come from and how they are prompted
        if self.method != "base":
            ident["train"] = asdict(cfg.train)
            for k in ("save_steps", "oom_retry", "logging_steps"):  # never change results
                ident["train"].pop(k)
            ident["train_items"] = cfg.tasks.max_train_items
        if self.method == "lora":
            lora = asdict(cfg.methods.lora)
            for k in ("enabled", "ranks", "alpha", "lr"):
                lora.pop(k)
            ident["lora"] = lora
        ident["eval"] = {
            "max_eval_items": cfg.tasks.max_eval_items,
            "max_new_tokens": cfg.eval.max_new_tokens,
            "acc_norm": cfg.eval.acc_norm,
        }
        return ident

    def config_hash(self, cfg: SweepConfig) -> str:
        blob = json.dumps(self.identity(cfg), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _fmt(x: float) -> str:
    return f"{x:g}"


def lora_variant(cfg: SweepConfig) -> str:
    lora = cfg.methods.lora
    parts = [name for name, on in (("rslora", lora.use_rslora), ("dora", lora.use_dora)) if on]
    if lora.init != "default":
        parts.append(lora.init)
    return "-".join(parts)


def make_plan(cfg: SweepConfig) -> list[RunSpec]:
    """Expand the config into runs; the base model is one shared row."""
    runs: list[RunSpec] = []
    m = cfg.methods
    if m.base:
        runs.append(RunSpec(BASE_RUN_ID, "base", None, cfg.seeds[0]))
    variant = lora_variant(cfg)
    for task in cfg.tasks.train:
        for seed in cfg.seeds:
            if m.full.enabled:
                runs.append(RunSpec(f"{task}__full__s{seed}", "full", task, seed, lr=m.full.lr))
            if m.lora.enabled:
                for r in m.lora.ranks:
                    a = m.lora.alpha_for(r)
                    tag = f"lora-r{r}-a{_fmt(a)}" + (f"-{variant}" if variant else "")
                    runs.append(
                        RunSpec(
                            f"{task}__{tag}__s{seed}",
                            "lora",
                            task,
                            seed,
                            rank=r,
                            alpha=a,
                            lr=m.lora.lr,
                            variant=variant,
                        )
                    )
    return runs
