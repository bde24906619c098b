"""LoRA target modules per architecture, and the checks that they fit the model.

The paper adapts q/k/v/o_proj. Llama, Mistral, Qwen2 and Gemma use those names; other
architectures name (or fuse) their attention projections differently, so the paper's set is
translated for them. `all-linear` is peft's: every linear layer but the output head.
"""

from __future__ import annotations

from typing import Any

from rankscope.errors import ConfigError

PAPER_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")

# model_type -> the modules that play q/k/v/o (fused qkv projections appear once).
ATTENTION_NAMES: dict[str, tuple[str, ...]] = {
    "gpt2": ("c_attn", "attn.c_proj"),
    "gpt_bigcode": ("c_attn", "attn.c_proj"),
    "gpt_neox": ("query_key_value", "attention.dense"),
    "falcon": ("query_key_value", "self_attention.dense"),
    "bloom": ("query_key_value", "self_attention.dense"),
    "phi3": ("qkv_proj", "o_proj"),
    "opt": ("q_proj", "k_proj", "v_proj", "out_proj"),
}


def resolve_targets(model_type: str, requested: list[str]) -> list[str] | str:
    """The target list peft gets: 'all-linear', the paper's set renamed for this
    architecture, or the names as given."""
    if list(requested) == ["all-linear"]:
        return "all-linear"
    if set(requested) == set(PAPER_TARGETS) and model_type in ATTENTION_NAMES:
        return list(ATTENTION_NAMES[model_type])
    return list(requested)


def linear_layers(model: Any) -> list[tuple[str, int, int]]:
    """(qualified name, d_in, d_out) of every nn.Linear and GPT-2-style Conv1D."""
    import torch

    out = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            out.append((name, mod.in_features, mod.out_features))
        elif type(mod).__name__ == "Conv1D" and hasattr(mod, "nf"):
            out.append((name, mod.weight.shape[0], mod.nf))  # Conv1D stores W as (in, out)
    return out


def _output_head(model: Any) -> str | None:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, mod in model.named_modules():
        if mod is head:
            return name
    return None


def matched_layers(model: Any, targets: list[str] | str) -> list[tuple[str, int, int]]:
    """The layers peft would wrap: a name equal to a target or ending in '.<target>'."""
    layers = linear_layers(model)
    if targets == "all-linear":
        head = _output_head(model)
        return [layer for layer in layers if layer[0] != head]
    return [
        layer
        for layer in layers
        if any(layer[0] == t or layer[0].endswith("." + t) for t in targets)
    ]


def check_targets(model: Any, targets: list[str] | str, ranks: list[int]) -> None:
    """Refuse targets that match nothing and ranks above a matched layer's min(d_in, d_out)."""
    hits = matched_layers(model, targets)
    if isinstance(targets, list):
        missing = [t for t in targets if not any(matched_layers(model, [t]))]
        if missing:
            names = sorted({n.rsplit(".", 1)[-1] for n, _, _ in linear_layers(model)})
            raise ConfigError(
                f"methods.lora.target_modules: {missing} match no linear layer of the model "
                f"({getattr(model.config, 'model_type', '?')}); its linear layers are: "
                f"{', '.join(names)} (or use ['all-linear'])"
            )
    if not hits:
        raise ConfigError("methods.lora.target_modules: the model has no linear layer to adapt")
    name, d_in, d_out = min(hits, key=lambda h: min(h[1], h[2]))
    for r in ranks:
        if r > min(d_in, d_out):
            raise ConfigError(
                f"methods.lora.ranks: rank {r} exceeds min(d_in, d_out) = {min(d_in, d_out)} "
                f"of target layer {name} ({d_in} -> {d_out}); use ranks <= {min(d_in, d_out)}"
            )


def lora_param_count(model: Any, targets: list[str] | str, rank: int, dora: bool = False) -> int:
    """Trainable parameters of LoRA at `rank`: r (d_in + d_out) per wrapped layer
    (+ d_out magnitudes for DoRA)."""
    return sum(
        rank * (d_in + d_out) + (d_out if dora else 0)
        for _, d_in, d_out in matched_layers(model, targets)
    )
