"""LoRA through peft: one run per rank; rsLoRA, DoRA and the init (gaussian, PiSSA) are
options of this one method, not methods of their own.

The options that change what LoRA *is* form the run's variant (`rslora`, `dora-pissa`, ...),
which is part of its id and label; all LoRA options except the per-run ones (rank, alpha,
lr) go into the config hash.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rankscope.config import ModelConfig, SweepConfig
from rankscope.identity import RunSpec
from rankscope.methods.base import DeltaW, Method
from rankscope.targets import check_targets, lora_param_count, resolve_targets

_PER_RUN = ("enabled", "ranks", "alpha", "lr")  # in the RunSpec (or the plan), not the hash
_ADAPTER = "default"  # peft's adapter name


def _fmt(x: float) -> str:
    return f"{x:g}"


class LoraMethod(Method):
    name = "lora"
    order = 2
    prose_name = "LoRA"
    ranked = True
    artifact = "adapter"
    flops_per_token = 4
    checks_shapes = True

    def enabled(self, cfg: SweepConfig) -> bool:
        return cfg.methods.lora.enabled

    def variant(self, cfg: SweepConfig) -> str:
        """'', 'rslora', 'dora', 'rslora-dora-pissa', ... in that fixed order."""
        lora = cfg.methods.lora
        flags = (("rslora", lora.use_rslora), ("dora", lora.use_dora))
        parts = [name for name, on in flags if on]
        if lora.init != "default":
            parts.append(lora.init)
        return "-".join(parts)

    def expand(self, cfg: SweepConfig, task: str | None, seed: int) -> list[RunSpec]:
        """One run per rank: `<task>__lora-r<r>-a<alpha>[-<variant>]__s<seed>`."""
        lc, variant = cfg.methods.lora, self.variant(cfg)
        runs = []
        for r in lc.ranks:
            a = lc.alpha_for(r)
            tag = f"{self.name}-r{r}-a{_fmt(a)}" + (f"-{variant}" if variant else "")
            run_id = f"{task}__{tag}__s{seed}"
            runs.append(RunSpec(run_id, self.name, task, seed, r, a, lc.lr, variant))
        return runs

    def hash_fields(self, cfg: SweepConfig) -> dict[str, Any]:
        options = asdict(cfg.methods.lora)
        for k in _PER_RUN:
            options.pop(k)
        return {**super().hash_fields(cfg), self.name: options}

    def target_names(self, cfg: SweepConfig) -> list[str]:
        """The module names LoRA adapts, as configured (the analysis looks at these)."""
        return list(cfg.methods.lora.target_modules)

    def preflight(self, cfg: SweepConfig, model: Any) -> None:
        """Every target matches a layer and every rank fits under min(d_in, d_out)."""
        lc = cfg.methods.lora
        check_targets(model, resolve_targets(model.config.model_type, lc.target_modules), lc.ranks)

    # ---------------------------------------------------------------- train, save, load
    def peft_config(self, run: RunSpec, cfg: SweepConfig, model_type: str = "llama") -> Any:
        """peft's LoraConfig for one run (the variant's options included)."""
        from peft import LoraConfig

        lc = cfg.methods.lora
        init: Any = {"default": True, "gaussian": "gaussian", "pissa": "pissa"}[lc.init]
        return LoraConfig(
            r=run.rank,
            lora_alpha=run.alpha,
            lora_dropout=lc.dropout,
            target_modules=resolve_targets(model_type, lc.target_modules),
            use_rslora=lc.use_rslora,
            use_dora=lc.use_dora,
            init_lora_weights=init,
            bias="none",
            task_type="CAUSAL_LM",
        )

    def prepare(self, model: Any, run: RunSpec, cfg: SweepConfig) -> Any:
        from peft import get_peft_model

        model_type = getattr(model.config, "model_type", "")
        targets = resolve_targets(model_type, cfg.methods.lora.target_modules)
        check_targets(model, targets, [run.rank or 0])
        return get_peft_model(model, self.peft_config(run, cfg, model_type))

    def _write(self, model: Any, tok: Any, tmp: Path) -> None:
        model.save_pretrained(tmp)  # the adapter only; the tokenizer is the base model's

    def load(self, base: Any, run_dir: Path, mcfg: ModelConfig) -> Any:
        from peft import PeftModel

        return PeftModel.from_pretrained(base, Path(run_dir) / self.artifact)

    # ---------------------------------------------------------------- cost
    def trainable_params(self, model: Any, run: RunSpec, cfg: SweepConfig) -> int:
        lc = cfg.methods.lora
        targets = resolve_targets(model.config.model_type, lc.target_modules)
        return lora_param_count(model, targets, run.rank or 0, lc.use_dora)

    def held_params(self, total: int, trainable: int) -> int:
        return total + trainable  # the adapter sits beside the frozen base weights

    # ---------------------------------------------------------------- analysis
    def delta_w(
        self, run_dir: Path, base: Any, names: list[str], w0: dict[str, Any]
    ) -> Iterator[DeltaW]:
        """ΔW = s·B·A via peft's own layers (`get_delta_weight`); its singular values from
        the factors (no dense SVD), except for DoRA, whose ΔW is not B·A."""
        from peft import PeftModel

        from rankscope.analysis.spectral import lora_delta_singular_values

        peft_model = PeftModel.from_pretrained(copy.deepcopy(base), Path(run_dir) / self.artifact)
        mods = dict(peft_model.get_base_model().named_modules())
        for n in names:
            layer = mods[n]
            if not hasattr(layer, "lora_A") or _ADAPTER not in layer.lora_A:
                yield n, None, None  # not adapted: ΔW = 0
                continue
            delta = layer.get_delta_weight(_ADAPTER).detach().double()
            sv = None
            if not getattr(layer, "use_dora", {}).get(_ADAPTER, False):
                a = layer.lora_A[_ADAPTER].weight.detach()
                b = layer.lora_B[_ADAPTER].weight.detach()
                sv = lora_delta_singular_values(b, a, float(layer.scaling[_ADAPTER]))
            yield n, delta, sv


LORA = LoraMethod()
