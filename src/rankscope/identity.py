"""A run's identity as typed data: what it is (`RunSpec`) and what shaped it (its hash).

The run id is the readable name (`toy-arith__lora-r16-a32-lr5e-4__s0`); the same facts are kept as
typed fields (train task, method, rank, alpha, lr, variant, seed) so nothing downstream has
to parse the id. The config hash covers everything that determines the run's results: a
finished run is reused only while it is unchanged.

This module sits below the methods: it knows the parts of the identity every run shares
(spec, model, data, eval) and takes the method's own part as data, so a method can build
`RunSpec`s without an import cycle. `rankscope.plan.config_hash` joins the two.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from rankscope.config import SweepConfig
from rankscope.decontam import RULE as DECONTAM_RULE
from rankscope.tasks.base import SUBSET_RULE
from rankscope.world.spec import TASKS_VERSION, WORLD_VERSION, spec_for

BASE_RUN_ID = "base"

PROMPT_VERSION = 2
"""Bump when a task's prompts, completions or scoring change in code (issue 14: GSM8K
few-shot, lm-eval's acc_norm prompts, MathQA rationale first, gold log-prob and KL
metrics), so runs evaluated the old way are not reused."""


def fmt_lr(lr: float) -> str:
    """A learning rate as run ids write it: 5e-4, 2.5e-4, 1e-3 (never 0.0005)."""
    mantissa, exponent = f"{lr:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid. The fields and their order are part of the config hash and of
    every run dir's `config.yaml`; never reorder or rename them."""

    run_id: str
    method: str  # a name in rankscope.methods.METHODS: base | full | lora
    train_task: str | None
    seed: int
    rank: int | None = None
    alpha: float | None = None
    lr: float | None = None
    variant: str = ""
    replay: float = 0.0
    """`train.replay_fraction` of the run (0: no general data mixed in). Added after runs were
    made without it: hashed only when non-zero (`run_identity`), so those keep their hash."""


REPLAY_RULE = "general-replay-v1"
"""How a run's general items are chosen (`rankscope.replay`), named in the identity of every
run with replay: a change to the rule must change it."""


def replay_tag(fraction: float) -> str:
    """The run id's replay part: '' for none, '-rp25' for 0.25, '-rp12.5' for 0.125."""
    return f"-rp{100 * fraction:g}" if fraction else ""


def run_id_of(task: str | None, tag: str, seed: int) -> str:
    """A trained run's readable id: `<train task>__<tag>__s<seed>`, the tag being its method's
    `arm_tag` (the configuration without train task and seed)."""
    return f"{task}__{tag}__s{seed}"


def run_identity(run: RunSpec, cfg: SweepConfig, method_fields: Mapping[str, Any]) -> dict:
    """Everything that determines a run's results: the fields every run shares, plus what its
    method adds (`Method.hash_fields`). The key order is the historical one."""
    spec = asdict(run)
    if not run.replay:  # a run without replay keeps the hash it had before replay existed
        spec.pop("replay")
    ident: dict[str, Any] = {"spec": spec, "model": asdict(cfg.model)}
    ident["model"].pop("cache_dir", None)  # where the cache lives does not change results
    if cfg.model.name == "toy":  # the world's items and base model, not only its name
        spec = spec_for(cfg.model.world, cfg.model.world_seed)
        ident["world"] = {**asdict(spec), "version": WORLD_VERSION, "tasks": TASKS_VERSION}
    ident["data"] = asdict(cfg.data)  # where items come from and how they are prompted
    ident.update(method_fields)
    ident["eval"] = {
        "max_eval_items": cfg.tasks.max_eval_items,
        "max_new_tokens": cfg.eval.max_new_tokens,
        "acc_norm": cfg.eval.acc_norm,
        "prompts": PROMPT_VERSION,
        "kl_texts": cfg.eval.kl_texts,
    }
    if "mmlu" in cfg.tasks.eval:  # its subjects leave out every training task's domain
        ident["eval"]["mmlu_domains_of"] = sorted(cfg.tasks.train)
    if cfg.tasks.max_eval_items:  # which items a subset holds, not only how many
        ident["eval"]["subset"] = SUBSET_RULE
    if run.train_task is not None:
        ident["train_data"] = train_data_identity(cfg)
        if run.replay:  # which general items: the retention task's general set, by the rule
            ident["train_data"]["replay"] = {"rule": REPLAY_RULE, "from": cfg.tasks.retention}
    return ident


def train_data_identity(cfg: SweepConfig) -> dict[str, Any]:
    """What decides a trained run's items beyond the task: the items dropped for overlapping
    an eval task's test items (so the eval tasks themselves), and how a subset is drawn."""
    out: dict[str, Any] = {"decontam": DECONTAM_RULE, "against": sorted(cfg.tasks.eval)}
    if cfg.tasks.max_train_items:
        out["subset"] = SUBSET_RULE
    return out


def hash_identity(ident: Mapping[str, Any]) -> str:
    """The 16-hex-digit config hash of an identity (stable: sorted keys, str fallback)."""
    blob = json.dumps(ident, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
