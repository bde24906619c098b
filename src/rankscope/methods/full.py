"""Full fine-tuning: every weight trainable, the whole model saved as `model/`.

The paper's reference point for LoRA: one run per train task, seed and `methods.full.lr`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from rankscope.config import ModelConfig, SweepConfig
from rankscope.identity import RunSpec, fmt_lr, replay_tag, run_id_of
from rankscope.methods.base import DeltaW, Method
from rankscope.models import from_pretrained_kwargs


class FullMethod(Method):
    name = "full"
    order = 1
    prose_name = "full SFT"
    artifact = "model"
    flops_per_token = 6

    def enabled(self, cfg: SweepConfig) -> bool:
        return cfg.methods.full.enabled

    def expand(self, cfg: SweepConfig, task: str | None, seed: int) -> list[RunSpec]:
        """One run per lr x replay fraction: `<task>__full-lr<lr>[-rp<%>]__s<seed>`."""
        runs = []
        for lr in cfg.methods.full.lrs:
            for f in cfg.train.replay_fractions:
                spec = RunSpec("", self.name, task, seed, lr=lr, replay=f)
                runs.append(replace(spec, run_id=run_id_of(task, self.arm_tag(spec), seed)))
        return runs

    def arm_tag(self, run: RunSpec) -> str:
        return f"{self.name}-lr{fmt_lr(run.lr or 0.0)}{replay_tag(run.replay)}"

    def prepare(self, model: Any, run: RunSpec, cfg: SweepConfig) -> Any:
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def _write(self, model: Any, tok: Any, tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)  # model/ is a complete HF model dir

    def adopt(self, saved: Path, tok: Any, run_dir: Path) -> None:
        tok.save_pretrained(saved)
        super().adopt(saved, tok, run_dir)

    def load(self, base: Any, run_dir: Path, mcfg: ModelConfig) -> Any:
        from transformers import AutoModelForCausalLM

        path = Path(run_dir) / self.artifact
        return AutoModelForCausalLM.from_pretrained(path, **from_pretrained_kwargs(mcfg))

    def trainable_params(self, model: Any, run: RunSpec, cfg: SweepConfig) -> int:
        return sum(p.numel() for p in model.parameters())

    def delta_w(
        self, run_dir: Path, base: Any, names: list[str], w0: dict[str, Any]
    ) -> Iterator[DeltaW]:
        """ΔW = W₁ - W₀, W₁ read from the saved safetensors (no model is instantiated)."""
        import torch
        from safetensors import safe_open

        files = sorted((Path(run_dir) / self.artifact).glob("*.safetensors"))
        found: dict[str, Any] = {}
        for f in files:
            with safe_open(str(f), framework="pt") as st:
                for n in w0:
                    key = f"{n}.weight"
                    if key in st.keys():
                        found[n] = st.get_tensor(key).to(torch.float64)
        for n, w in w0.items():
            yield n, found[n] - w, None


FULL = FullMethod()
