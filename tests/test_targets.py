"""Target modules per architecture, their checks, and parameter counts against peft's own."""

from __future__ import annotations

import pytest

from rankscope.config import ModelConfig
from rankscope.errors import ConfigError
from rankscope.targets import (
    PAPER_TARGETS,
    check_targets,
    lora_param_count,
    matched_layers,
    resolve_targets,
)


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    conf = LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(conf)


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4))


def _peft_trainable(model, targets, rank: int) -> int:
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=rank, target_modules=targets))
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


@pytest.mark.parametrize("make", [_llama, _gpt2])
@pytest.mark.parametrize("requested", [list(PAPER_TARGETS), ["all-linear"]])
def test_lora_param_count_equals_peft(make, requested):
    model = make()
    targets = resolve_targets(model.config.model_type, requested)
    assert lora_param_count(model, targets, 4) == _peft_trainable(make(), targets, 4)


def test_paper_targets_map_to_gpt2_attention_only():
    model = _gpt2()
    targets = resolve_targets("gpt2", list(PAPER_TARGETS))
    names = [n for n, _, _ in matched_layers(model, targets)]
    assert names and all(".attn." in n for n in names)  # not mlp.c_proj
    assert {n.rsplit(".", 1)[-1] for n in names} == {"c_attn", "c_proj"}


def test_llama_keeps_paper_names_and_gqa_shapes():
    model = _llama()
    targets = resolve_targets("llama", list(PAPER_TARGETS))
    shapes = {n.rsplit(".", 1)[-1]: (i, o) for n, i, o in matched_layers(model, targets)}
    assert shapes == {
        "q_proj": (32, 32),
        "k_proj": (32, 16),
        "v_proj": (32, 16),
        "o_proj": (32, 32),
    }


def test_target_matching_nothing_is_refused_with_the_real_names():
    with pytest.raises(ConfigError, match=r"\['query'\] match no linear layer.*q_proj"):
        check_targets(_llama(), ["q_proj", "query"], [4])


def test_rank_above_min_dim_is_refused_naming_the_layer():
    with pytest.raises(ConfigError, match=r"rank 17 exceeds min\(d_in, d_out\) = 16.*k_proj"):
        check_targets(_llama(), list(PAPER_TARGETS), [8, 17])
    check_targets(_llama(), list(PAPER_TARGETS), [16])  # the limit itself is fine


def test_paper_models_shapes_offline_without_weights():
    from rankscope.estimate import meta_model

    llama = meta_model(ModelConfig(name="meta-llama/Llama-3.1-8B"))
    assert sum(p.numel() for p in llama.parameters()) == 8_030_261_248
    assert all(p.is_meta for p in llama.parameters())
    # the commonly quoted 6.8M for LoRA r=8 on q/k/v/o of Llama-3-8B
    assert lora_param_count(llama, list(PAPER_TARGETS), 8) == 6_815_744
    qwen = meta_model(ModelConfig(name="Qwen/Qwen2.5-7B"))
    assert sum(p.numel() for p in qwen.parameters()) == 7_615_616_512


def test_unknown_model_offline_says_what_to_do():
    from rankscope.estimate import model_config

    with pytest.raises(ConfigError, match="no config for 'nobody/nothing' offline"):
        model_config(ModelConfig(name="nobody/nothing"))
