"""Model loading: find the base model (toy world, tiny-real, smollm2-135m-instruct, a local dir
or a hub id) and load it once per process.

Not a method: every method starts from the same base model, and the analysis and evaluation
load it too, so loading lives below `rankscope.methods`. torch/transformers are imported
inside the functions that need them, so importing this module stays cheap (the CLI's help).
"""

from __future__ import annotations

import copy
import socket
from pathlib import Path
from typing import Any

from rankscope import smollm2
from rankscope.config import ModelConfig
from rankscope.errors import ConfigError, RankscopeError
from rankscope.world import build as world_build
from rankscope.world import tiny as world_tiny
from rankscope.world.generator import spec_for

_BASE_CACHE: dict[str, Any] = {}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def resolve_model_path(mcfg: ModelConfig) -> Path | str:
    """The toy model's dir (shipped, or built on first use), a built-in model's dir (built or
    converted on first use), a local dir, or a hub id."""
    if mcfg.name == "toy":
        spec = spec_for(mcfg.world, mcfg.world_seed)
        cache = Path(mcfg.cache_dir) if mcfg.cache_dir else None
        return world_build.base_model_path(spec, cache)
    if mcfg.name == "tiny-real":
        return world_tiny.ensure_tiny_model(mcfg)
    if mcfg.name == smollm2.NAME:
        return smollm2.ensure_smollm2(mcfg)
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


def from_pretrained_kwargs(mcfg: ModelConfig) -> dict[str, Any]:
    """`from_pretrained` options from the model section (the base model and a saved full-SFT
    model must load with the same dtype and attention implementation)."""
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
            model = AutoModelForCausalLM.from_pretrained(path, **from_pretrained_kwargs(mcfg))
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


def count_params(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
