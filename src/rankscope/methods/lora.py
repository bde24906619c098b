"""LoRA through peft: one run per variant x rank x alpha x lr; rsLoRA, DoRA and the init
(gaussian, PiSSA) are variants of this one method (`methods.lora.variants`), not methods of
their own.

A run's variant (`rslora`, `dora-pissa`, ... ; '' for plain LoRA) leads its id in place of
`lora` (`toy-med__dora-r32-a64-lr5e-4__s1`) and is part of its label; the per-run options
(variant, rank, alpha, lr) are in the RunSpec, every other LoRA option in the config hash.

PiSSA trains on a *residual* base W_res = W₀ − s·B₀A₀ (its initial factors hold the top
singular directions of W₀). The saved adapter is converted to a plain LoRA adapter on the
untouched W₀ (peft's `path_initial_model_for_weight_conversion`: ΔW = s·(BA − B₀A₀) as factors
[B | −B₀], [A; A₀], so rank 2r), so that loading, evaluation and ΔW all start from W₀ like
every other run. The trainable parameters are still the r-rank ones (`trainable_params`).
"""

from __future__ import annotations

import copy
import itertools
import tempfile
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from rankscope.config import ModelConfig, SweepConfig
from rankscope.config.sections import variant_options
from rankscope.identity import RunSpec, fmt_lr, replay_tag, run_id_of
from rankscope.methods.base import DeltaW, Method
from rankscope.targets import check_targets, lora_param_count, resolve_targets

_PER_RUN = ("enabled", "ranks", "alpha", "lr", "variants")  # in the RunSpec, not the hash
_ADAPTER = "default"  # peft's adapter name
_INITIAL = "initial"  # the adapter name peft gives the initial PiSSA adapter while converting

_PISSA_INIT: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
"""The initial adapter state of each PiSSA model `prepare` made, for the conversion at save
(weak keys: dropped with the model)."""


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
        """One run per variant x rank x distinct alpha x lr x replay fraction, in that nesting:
        `<task>__<variant>-r<r>-a<alpha>-lr<lr>[-rp<%>]__s<seed>` (variant 'lora' for plain
        LoRA; no replay part without replay)."""
        lc = cfg.methods.lora
        runs = []
        for name in lc.variants:
            variant = "" if name == "lora" else name
            for r in lc.ranks:
                alphas = dict.fromkeys(lc.alpha_for(r, rule) for rule in lc.alphas)
                for a in alphas:  # two rules giving this rank one alpha: one run
                    for lr, f in itertools.product(lc.lrs_for(r), cfg.train.replay_fractions):
                        spec = RunSpec("", self.name, task, seed, r, a, lr, variant, f)
                        run_id = run_id_of(task, self.arm_tag(spec), seed)
                        runs.append(replace(spec, run_id=run_id))
        return runs

    def arm_tag(self, run: RunSpec) -> str:
        """`<variant>-r<r>-a<alpha>-lr<lr>[-rp<%>]`, the variant 'lora' for plain LoRA."""
        lr = fmt_lr(run.lr or 0.0)
        alpha = _fmt(run.alpha or 0.0)
        return f"{run.variant or 'lora'}-r{run.rank}-a{alpha}-lr{lr}{replay_tag(run.replay)}"

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
        """The peft-wrapped model; for PiSSA, its initial adapter is kept for the save."""
        from peft import get_peft_model, get_peft_model_state_dict

        model_type = getattr(model.config, "model_type", "")
        targets = resolve_targets(model_type, cfg.methods.lora.target_modules)
        check_targets(model, targets, [run.rank or 0])
        peft_model = get_peft_model(model, self.peft_config(run, cfg, model_type))
        if _is_pissa(peft_model.peft_config[_ADAPTER]):
            state = get_peft_model_state_dict(peft_model)
            _PISSA_INIT[peft_model] = {k: v.detach().cpu().clone() for k, v in state.items()}
        return peft_model

    def _write(self, model: Any, tok: Any, tmp: Path) -> None:
        """The adapter only (the tokenizer is the base model's); PiSSA converted to a LoRA
        adapter on W₀ when its initial adapter is known (an FSDP save is not converted:
        peft then re-applies the PiSSA residual at load, and `delta_w` reads it off)."""
        initial = _PISSA_INIT.get(model)
        if initial is None:
            model.save_pretrained(tmp)
            return
        with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
            # peft loads the initial adapter beside the PiSSA one and warns against exactly
            # that; converting is what the warning recommends
            warnings.filterwarnings("ignore", "PiSSA changes the base weights")
            init_dir = Path(d) / _INITIAL
            _save_initial(model, initial, init_dir)
            model.save_pretrained(tmp, path_initial_model_for_weight_conversion=str(init_dir))
        _restore_magnitudes(model, Path(tmp))

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
        """ΔW = W₁ − W₀ of every adapted layer as peft computes W₁ (`_layer_delta`); its
        singular values from the factors when ΔW is s·B·A (no dense SVD)."""
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(copy.deepcopy(base), Path(run_dir) / self.artifact)
        mods = dict(peft_model.get_base_model().named_modules())
        for n in names:
            layer = mods[n]
            if not hasattr(layer, "lora_A") or _ADAPTER not in layer.lora_A:
                yield n, None, None  # not adapted: ΔW = 0
                continue
            yield n, *_layer_delta(layer, w0[n])


def _is_pissa(config: Any) -> bool:
    return str(getattr(config, "init_lora_weights", "")).lower().startswith("pissa")


def _save_initial(model: Any, state: dict[str, Any], path: Path) -> None:
    """The initial PiSSA adapter as peft's conversion reads it: its config with
    `init_lora_weights=True` (loading it must not subtract the residual a second time)."""
    from safetensors.torch import save_file

    config = copy.deepcopy(model.peft_config[_ADAPTER])
    config.init_lora_weights = True
    config.save_pretrained(str(path))
    save_file(state, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})


def _restore_magnitudes(model: Any, path: Path) -> None:
    """Put back what peft's conversion drops: it keeps only lora_A/lora_B, but DoRA's trained
    magnitudes hold unchanged for the converted adapter (it rescales the same matrix,
    W₀ + s·(BA − B₀A₀) = W_res + s·BA)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    file = path / "adapter_model.safetensors"
    saved = load_file(str(file))
    trained = get_peft_model_state_dict(model)
    missing = {k: v.detach().cpu().contiguous() for k, v in trained.items() if k not in saved}
    if missing:
        save_file({**saved, **missing}, str(file), metadata={"format": "pt"})


def _layer_delta(layer: Any, w0: Any) -> tuple[Any, Any]:
    """(ΔW, its singular values or None) of one peft LoRA layer, float64, against the untouched
    base weight `w0`.

    ΔW is what peft merges, minus W₀: s·B·A for LoRA, but for DoRA the magnitude rescaling
    m·(W + s·B·A)/‖W + s·B·A‖ (which `get_delta_weight` leaves out). The layer's own base
    weight differs from W₀ only for a PiSSA adapter saved unconverted (peft re-applies the
    residual at load); that shift is part of ΔW, and the factors no longer give its spectrum.
    """
    from rankscope.analysis.spectral import lora_delta_singular_values

    base_w = layer.get_base_layer().weight.detach().double().cpu()
    lora = layer.get_delta_weight(_ADAPTER).detach().double().cpu()
    if _ADAPTER in getattr(layer, "lora_magnitude_vector", {}):
        return _dora_weight(layer, base_w, lora) - w0, None
    if not _same(base_w, w0):
        return base_w - w0 + lora, None
    a = layer.lora_A[_ADAPTER].weight.detach()
    b = layer.lora_B[_ADAPTER].weight.detach()
    return lora, lora_delta_singular_values(b, a, float(layer.scaling[_ADAPTER]))


def _dora_weight(layer: Any, base_w: Any, lora: Any) -> Any:
    """DoRA's merged weight, as peft's merge computes it but in float64: each output row of
    W + s·B·A rescaled to the trained magnitude m (peft's norm is per output feature)."""
    fan = bool(getattr(layer, "fan_in_fan_out", False))
    w = (base_w + lora).T if fan else base_w + lora  # (d_out, d_in)
    m = layer.lora_magnitude_vector[_ADAPTER].weight.detach().double().cpu().reshape(-1, 1)
    merged = m / w.norm(dim=1, keepdim=True) * w
    return merged.T if fan else merged


def _same(a: Any, b: Any) -> bool:
    """Bit-equal tensors (W₀ read twice from one checkpoint is, exactly)."""
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b.to(a.dtype)))


LORA = LoraMethod()
