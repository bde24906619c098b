"""Plain helpers of the loader tests (a module of its own: `conftest` names collide)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parents[1] / "fixtures" / "data"
LM_EVAL_TASKS = Path(__import__("lm_eval").__file__).parent / "tasks"


def lm_eval_yaml(rel: str) -> dict[str, Any]:
    """An installed lm-eval task config, `include`s resolved (e.g. 'gsm8k/gsm8k.yaml')."""
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(LM_EVAL_TASKS / rel)
