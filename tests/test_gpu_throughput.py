"""benchmarks/gpu_throughput.py runs on CPU with the tiny shape (the GPU shapes only differ in
size): both methods train, their tokens/s and losses are real, the JSON is written."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_throughput.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_shape_on_cpu_measures_both_methods(tmp_path, capsys):
    gt = load_script()
    out = tmp_path / "throughput.json"
    argv = ["--preset", "tiny", "--device", "cpu", "--steps", "2", "--warmup", "1"]
    argv += ["--batch", "2", "--seq", "16", "--methods", "full", "lora", "--json", str(out)]
    result = gt.main(argv)
    full, lora = result["results"]
    assert (full["method"], lora["method"]) == ("full", "lora")
    for row in (full, lora):
        assert row["tokens_per_s"] > 0 and row["achieved_tflops"] > 0
        assert len(row["losses"]) == 3 and all(math.isfinite(x) for x in row["losses"])
        assert row["mfu"] is None  # no peak known for a CPU
    assert 0 < lora["trainable_params"] < full["trainable_params"] == full["total_params"]
    assert lora["flops_per_token"] < full["flops_per_token"]
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["dtype"] == "float32" and result["measured_at"]
    assert "MFU: n/a" in capsys.readouterr().out


def test_flops_formula_and_the_presets_shapes():
    gt = load_script()
    n, layers, hidden, seq = 1000, 2, 8, 16
    attention = 12 * layers * hidden * seq
    assert gt.flops_per_token("full", n, 0, layers, hidden, seq) == 6 * n + attention
    assert gt.flops_per_token("lora", n, 50, layers, hidden, seq) == 4 * n + 300 + attention
    one_b, eight_b = gt.PRESETS["llama-3.2-1b"], gt.PRESETS["llama-3.1-8b"]
    assert one_b["tie_word_embeddings"] and not eight_b["tie_word_embeddings"]
    assert (one_b["hidden_size"], eight_b["intermediate_size"]) == (2048, 14336)


def test_the_gpu_shapes_have_the_real_models_parameter_counts():
    """Built on the meta device (no memory): Llama-3.2-1B 1.236 B, Llama-3.1-8B 8.030 B; N
    leaves out the RMSNorm weights (2 a layer + 1) and an untied input embedding."""
    import torch

    gt = load_script()
    expected = {
        "llama-3.2-1b": (1_235_814_400, 1_235_814_400 - 33 * 2048),  # tied: the head is N
        "llama-3.1-8b": (8_030_261_248, 8_030_261_248 - 65 * 4096 - 128256 * 4096),
    }
    for preset, (total, n) in expected.items():
        model = gt.build_model(preset, torch.device("meta"), torch.bfloat16, 0)
        assert (sum(p.numel() for p in model.parameters()), gt.matmul_params(model)) == (total, n)
