"""The size and seed of a toy world (`WorldSpec`), its named presets and its version.

Apart from the generator so that code which only names a world (the config, the plan, the
shipped models' manifests) needs nothing of how a world is generated.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

# Bump whenever pretraining changes, so cached base models of an older world are not reused.
WORLD_VERSION = 7

# Bump whenever the tasks render their items differently (prompts, completions), so runs on
# the old items are not reused; outside the base model's key (the base model never sees them).
TASKS_VERSION = 2

TASK_FIELDS = (
    "n_med_train",
    "n_legal_train",
    "n_domain_val",
    "n_domain_test",
    "n_arith_train",
    "n_arith_val",
    "n_arith_test",
    "n_mathmcq_train",
    "n_mathmcq_val",
    "n_mathmcq_test",
    "general_items_per_fact",
)
"""How many items the tasks draw: the base model never sees them (pretraining reads the
general facts, the arithmetic tables and the names), so they are outside its key and a
change to them reuses the shipped base model."""


@dataclass(frozen=True)
class WorldSpec:
    """Size and seed of a toy world; the hash of what shapes the base model names it."""

    seed: int = 0
    n_general: int = 240  # general facts the base model learns in pretraining
    n_med_train: int = 1600  # toy-med training items (4-option MCQ)
    n_legal_train: int = 1600  # toy-legal training items (5-option MCQ)
    n_domain_val: int = 200  # validation items per domain (about held-out training subjects)
    n_domain_test: int = 700  # SE <= 2 pp at any accuracy needs >= 625 items
    max_number: int = 30  # arithmetic lives in 0..max_number
    max_step: int = 9  # operand of one arithmetic step
    n_arith_train: int = 600
    n_arith_val: int = 150
    n_arith_test: int = 700
    n_mathmcq_train: int = 600
    n_mathmcq_val: int = 150
    n_mathmcq_test: int = 700
    general_items_per_fact: int = 3  # toy-general asks about every general fact this often
    # model + pretraining
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 256
    pretrain_steps: int = 4000
    pretrain_batch: int = 64  # documents per step, packed into rows of pretrain_seq tokens
    pretrain_seq: int = 128
    pretrain_lr: float = 3e-3

    def model_spec(self) -> dict:
        """The fields that shape the pretrained base model (all but `TASK_FIELDS`)."""
        return {k: v for k, v in asdict(self).items() if k not in TASK_FIELDS}

    def key(self) -> str:
        """Names the base model: the model fields and the pretraining version."""
        blob = json.dumps({**self.model_spec(), "version": WORLD_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


PRESETS: dict[str, WorldSpec] = {
    "default": WorldSpec(),
    # A smaller world for the test suite: same structure, seconds instead of minutes.
    "small": WorldSpec(
        n_general=60,
        n_med_train=240,
        n_legal_train=240,
        n_domain_val=40,
        n_domain_test=48,
        max_number=12,
        max_step=4,
        n_arith_train=120,
        n_arith_val=24,
        n_arith_test=40,
        n_mathmcq_train=120,
        n_mathmcq_val=24,
        n_mathmcq_test=40,
        general_items_per_fact=1,
        d_model=64,
        n_layers=2,
        n_heads=2,
        d_ff=128,
        pretrain_steps=3000,
        pretrain_batch=32,
        pretrain_lr=5e-3,
    ),
}


def spec_for(preset: str, seed: int) -> WorldSpec:
    """The spec of a named preset with its seed replaced."""
    spec = PRESETS[preset]
    return spec if seed == spec.seed else replace(spec, seed=seed)
