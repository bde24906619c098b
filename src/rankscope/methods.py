"""Methods: base (untouched), full (every weight trainable), lora (peft; variants are options).

Each method is three small functions: prepare a model for training, save what training
changed, and load it back for evaluation. The registry is a plain dict.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankscope.config import ModelConfig, SweepConfig
from rankscope.errors import ConfigError, RankscopeError
from rankscope.plan import RunSpec

_BASE_CACHE: dict[str, Any] = {}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def resolve_model_path(mcfg: ModelConfig) -> Path | str:
    """The toy model's dir (shipped, or built on first use), a local dir, or a hub id."""
    if mcfg.name == "toy":
        from rankscope.world.build import base_model_path
        from rankscope.world.generator import spec_for

        spec = spec_for(mcfg.world, mcfg.world_seed)
        cache = Path(mcfg.cache_dir) if mcfg.cache_dir else None
        return base_model_path(spec, cache)
    if mcfg.name == "tiny-real":
        from rankscope.world.tiny import ensure_tiny_model

        return ensure_tiny_model(mcfg)
    path = Path(mcfg.name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model.name: {path} exists but has no config.json; expected a "
                "Hugging Face model directory"
            )
        if not any((path / f).is_file() for f in _TOKENIZER_FILES):
            raise ConfigError(
                f"model.name: {path} has no tokenizer files ({', '.join(_TOKENIZER_FILES)}); "
                "save the tokenizer beside the weights (tokenizer.save_pretrained)"
            )
        return path
    if not _hub_available(mcfg.name):
        raise ConfigError(
            f"model.name: {mcfg.name!r} is not a local directory, not in the Hugging Face cache, "
            "and the hub cannot be reached (offline). Point model.name at a local model "
            "directory (config.json + weights + tokenizer), or use model.name: toy for the "
            "embedded toy world."
        )
    return mcfg.name


def _hub_available(repo_id: str) -> bool:
    """True if the model is in the local HF cache or the hub answers (fail fast offline)."""
    import socket

    from huggingface_hub import constants, try_to_load_from_cache

    try:
        if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
            return True
    except ValueError:  # not a valid repo id
        return False
    if constants.HF_HUB_OFFLINE:
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


def _from_pretrained_kwargs(mcfg: ModelConfig) -> dict[str, Any]:
    import torch

    kw: dict[str, Any] = {}
    if mcfg.dtype != "auto":
        kw["dtype"] = getattr(torch, mcfg.dtype)
    if mcfg.attn_implementation:
        kw["attn_implementation"] = mcfg.attn_implementation
    if mcfg.trust_remote_code:
        kw["trust_remote_code"] = True
    return kw


def load_base(mcfg: ModelConfig) -> tuple[Any, Any, Path | str]:
    """Load (model, tokenizer, path) once per process; callers get a private copy."""
    path = resolve_model_path(mcfg)
    key = f"{path}|{mcfg.dtype}|{mcfg.attn_implementation}"
    if key not in _BASE_CACHE:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=mcfg.trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(path, **_from_pretrained_kwargs(mcfg))
        except OSError as e:
            raise RankscopeError(
                f"model.name: cannot load {mcfg.name!r} ({str(e).splitlines()[0]}). Without "
                "network, point model.name at a local model directory (config.json + weights "
                "+ tokenizer), or use model.name: toy for the embedded toy world."
            ) from None
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model.eval()
        _BASE_CACHE.clear()  # one base model resident at a time
        _BASE_CACHE[key] = (model, tok)
    model, tok = _BASE_CACHE[key]
    return copy.deepcopy(model), tok, path


# ------------------------------------------------------------------ prepare
def _prepare_base(model: Any, run: RunSpec, cfg: SweepConfig) -> Any:
    return model


def _prepare_full(model: Any, run: RunSpec, cfg: SweepConfig) -> Any:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def lora_config(run: RunSpec, cfg: SweepConfig, model_type: str = "llama") -> Any:
    from peft import LoraConfig

    from rankscope.targets import resolve_targets

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


def _prepare_lora(model: Any, run: RunSpec, cfg: SweepConfig) -> Any:
    from peft import get_peft_model

    from rankscope.targets import check_targets, resolve_targets

    model_type = getattr(model.config, "model_type", "")
    check_targets(model, resolve_targets(model_type, cfg.methods.lora.target_modules), [run.rank])
    return get_peft_model(model, lora_config(run, cfg, model_type))


# ------------------------------------------------------------------ save / load
def _atomic_dir(target: Path, write: Callable[[Path], None]) -> None:
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def _save_full(model: Any, tok: Any, run_dir: Path) -> Path:
    target = run_dir / "model"

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)

    _atomic_dir(target, write)
    return target


def _save_lora(model: Any, tok: Any, run_dir: Path) -> Path:
    target = run_dir / "adapter"
    _atomic_dir(target, lambda tmp: model.save_pretrained(tmp))
    return target


def _load_full(base: Any, run_dir: Path, mcfg: ModelConfig) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(run_dir / "model", **_from_pretrained_kwargs(mcfg))


def _load_lora(base: Any, run_dir: Path, mcfg: ModelConfig) -> Any:
    from peft import PeftModel

    return PeftModel.from_pretrained(base, run_dir / "adapter")


@dataclass(frozen=True)
class Method:
    prepare: Callable[[Any, RunSpec, SweepConfig], Any]
    save: Callable[[Any, Any, Path], Path] | None
    load: Callable[[Any, Path, ModelConfig], Any] | None


METHODS: dict[str, Method] = {
    "base": Method(_prepare_base, None, None),
    "full": Method(_prepare_full, _save_full, _load_full),
    "lora": Method(_prepare_lora, _save_lora, _load_lora),
}


def load_for_eval(run: RunSpec, run_dir: Path, mcfg: ModelConfig) -> tuple[Any, Any]:
    """The model a run produced, ready for evaluation (eval mode, no dropout)."""
    base, tok, _ = load_base(mcfg)
    method = METHODS[run.method]
    model = base if method.load is None else method.load(base, run_dir, mcfg)
    model.eval()
    return model, tok


def count_params(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
