"""Every shipped config still loads (its sections check themselves as they are built, so
loading is the whole check); the paper configs say what the paper did; its plan works offline."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_cli

from rankscope.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p.parent.name != "accelerate")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_config_loads(path):
    load_config(path)


def test_paper_configs_state_the_paper_design():
    for name in ("llama-3.1-8b", "qwen-2.5-7b"):
        cfg = load_config(ROOT / "configs" / "paper" / f"{name}.yaml")
        assert cfg.tasks.train == ["gsm8k", "mathqa", "mmlu", "medmcqa", "legalmcq"]
        assert cfg.methods.lora.ranks == [8, 16, 32, 64, 128] and cfg.methods.lora.alpha == "2r"
        assert cfg.methods.full.lr == 5e-5 and cfg.train.epochs == 3
        assert (cfg.train.batch_size, cfg.train.grad_accum, cfg.train.warmup_ratio) == (2, 4, 0.1)


def test_paper_plan_offline_shows_params_and_gpu_hours(tmp_path):
    res = run_cli(
        "plan",
        str(ROOT / "configs/paper/llama-3.1-8b.yaml"),
        "-o",
        str(tmp_path / "out"),
        env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "31 runs" in out  # base + 5 tasks x (full + 5 ranks)
    assert "6.82M" in out and "8.03B (100%)" in out  # LoRA r=8 q/k/v/o; full SFT
    assert "estimated total:" in out and "GPU-hours" in out
    assert not (tmp_path / "out").exists()  # planning writes nothing
