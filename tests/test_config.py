"""Config: the paper's defaults, overrides, and one clear error per bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from rankscope.config import SweepConfig, alpha_for, load_config, parse_set
from rankscope.errors import ConfigError


def test_dataclass_defaults_are_the_papers():
    cfg = SweepConfig()
    assert cfg.methods.lora.ranks == [8, 16, 32, 64, 128]
    assert [alpha_for(cfg.methods.lora.alpha, r) for r in (8, 128)] == [16, 256]
    assert cfg.methods.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert cfg.methods.lora.dropout == 0.05
    assert cfg.methods.full.lr == 5e-5
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.grad_accum) == (3, 2, 4)
    assert (cfg.train.scheduler, cfg.train.warmup_ratio) == ("linear", 0.1)


def test_embedded_default_config_loads():
    cfg = load_config()
    assert cfg.model.name == "toy" and cfg.tasks.retention == "toy-general"
    assert cfg.tasks.retention not in cfg.tasks.train


def test_set_overrides_parse_yaml_values():
    cfg = load_config(
        None,
        [
            "train.epochs=2",
            "methods.lora.ranks=[4,16]",
            "methods.full.lr=5e-5",
            "methods.lora.alpha=16",
        ],
    )
    assert cfg.train.epochs == 2.0
    assert cfg.methods.lora.ranks == [4, 16]
    assert cfg.methods.full.lr == 5e-5
    assert alpha_for(cfg.methods.lora.alpha, 4) == 16.0
    assert parse_set(["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize(
    "override, needle",
    [
        ("methods.lora.rankz=[4]", "methods.lora.rankz: unknown key (did you mean 'ranks'?)"),
        ("train.epochs=0", "train.epochs: must be > 0"),
        ("train.epochs=three", "train.epochs: expected float"),
        ("methods.lora.ranks=[0]", "every rank must be a positive integer"),
        ("methods.lora.ranks=[4.5]", "methods.lora.ranks[0]: expected int"),
        ("methods.lora.alpha=-2r", "methods.lora.alpha: must be > 0"),
        ("methods.lora.alpha=abc", "neither '<k>r'"),
        ("methods.full.lr=0", "methods.full.lr: must be > 0"),
        ("methods.lora.lr=-1", "methods.lora.lr: must be > 0"),
        ("tasks.train=[toy-medd]", "unknown task 'toy-medd' (did you mean 'toy-med'?)"),
        ("tasks.train=[toy-general]", "tasks.retention: 'toy-general' is also a training task"),
        ("train.scheduler=cosin", "(did you mean 'cosine'?)"),
        ("executor.kind=slurmm", "executor.kind"),
        ("train=3", "train: expected a mapping"),
        ("nonsense", "expected key=value"),
    ],
)
def test_bad_values_name_the_field(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert needle in str(err.value)


def test_malformed_yaml_names_file_and_line(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain:\n  epochs: [1,\n  batch_size: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(bad) in str(err.value) and "line" in str(err.value)


def test_missing_config_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
