"""LoRA through peft: one run per variant x rank x alpha x lr; rsLoRA, DoRA and the init
(gaussian, PiSSA) are variants of this one method (`methods.lora.variants`), not methods of
their own.

A run's variant (`rslora`, `dora-pissa`, ... ; '' for plain LoRA) leads its id in place of
`lora` (`toy-med__dora-r32-a64-lr5e-4__s1`) and is part of its label; the per-run options
(variant, rank, alpha, lr) are in the RunSpec, every other LoRA option in the config hash.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rankscope.config import ModelConfig, SweepConfig
from rankscope.config.sections import variant_options
from rankscope.identity import RunSpec, fmt_lr
from rankscope.methods.base import DeltaW, Method
from rankscope.targets import check_targets, lora_param_count, resolve_targets

_PER_RUN = ("enabled", "ranks", "alpha", "lr", "variants")  # in the RunSpec, not the hash
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

    def expand(self, cfg: SweepConfig, task: str | None, seed: int) -> list[RunSpec]:
        """One run per variant x rank x distinct alpha x lr, in that nesting:
        `<task>__<variant>-r<r>-a<alpha>-lr<lr>__s<seed>` (variant 'lora' for plain LoRA)."""
        lc = cfg.methods.lora
        runs = []
        for name in lc.variants:
            variant = "" if name == "lora" else name
            for r in lc.ranks:
                alphas = dict.fromkeys(lc.alpha_for(r, rule) for rule in lc.alphas)
                for a in alphas:  # two rules giving this rank one alpha: one run
                    for lr in lc.lrs:
                        tag = f"{name}-r{r}-a{_fmt(a)}-lr{fmt_lr(lr)}"
                        run_id = f"{task}__{tag}__s{seed}"
                        runs.append(RunSpec(run_id, self.name, task, seed, r, a, lr, variant))
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
        rslora, dora, init_name = variant_options(run.variant or "lora")
        init: Any = {"default": True, "gaussian": "gaussian", "pissa": "pissa"}[init_name]
        return LoraConfig(
            r=run.rank,
            lora_alpha=run.alpha,
            lora_dropout=lc.dropout,
            target_modules=resolve_targets(model_type, lc.target_modules),
            use_rslora=rslora,
            use_dora=dora,
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
        dora = variant_options(run.variant or "lora")[1]
        return lora_param_count(model, targets, run.rank or 0, dora)

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
