"""Config: the paper's defaults, overrides, one clear error per bad input, and sections that
check themselves (built from YAML or directly in Python)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rankscope.config import (
    DEFAULT_CONFIG,
    DataConfig,
    LoraConfig,
    SweepConfig,
    TasksConfig,
    TrainConfig,
    load_config,
    parse_set,
)
from rankscope.errors import ConfigError
from rankscope.plan import make_plan


def test_dataclass_defaults_are_the_papers():
    cfg = SweepConfig()
    assert cfg.methods.lora.ranks == [8, 16, 32, 64, 128]
    assert [cfg.methods.lora.alpha_for(r) for r in (8, 128)] == [16, 256]
    assert cfg.methods.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert cfg.methods.lora.dropout == 0.05
    assert cfg.methods.full.lr == 5e-5
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.grad_accum) == (3, 2, 4)
    assert (cfg.train.scheduler, cfg.train.warmup_ratio) == ("linear", 0.1)


def test_embedded_default_config_loads():
    cfg = load_config()
    assert cfg.model.name == "toy" and cfg.tasks.retention == "toy-general"


def test_set_overrides_parse_yaml_values():
    cfg = load_config(
        None,
        [
            "train.epochs=2",
            "methods.lora.ranks=[4,16]",
            "methods.lora.lr=1e-3",
            "methods.full.lr=5e-5",
            "methods.lora.alpha=16",
        ],
    )
    assert cfg.train.epochs == 2.0
    assert cfg.methods.lora.ranks == [4, 16]
    assert cfg.methods.full.lr == 5e-5
    assert cfg.methods.lora.alpha_for(4) == 16.0
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
        ("methods.lora.lr=[1e-3,1e-3]", "methods.lora.lr: a learning rate is listed twice"),
        ("methods.full.lr=[]", "methods.full.lr: give at least one learning rate"),
        ("methods.lora.alpha=[2r,abc]", "neither '<k>r'"),
        ("methods.lora.variants=[dora,qlora]", "unknown variant part 'qlora' in 'qlora'"),
        ("methods.lora.variants=[dora-rslora]", "in the order rslora-dora-gaussian-pissa"),
        ("methods.lora.variants=[lora,lora]", "methods.lora.variants: duplicate"),
        ("data.val_fraction=1", "data.val_fraction: must be in (0, 1)"),
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


def test_a_section_built_in_python_checks_itself():
    with pytest.raises(ConfigError, match=r"^train\.epochs: must be > 0, got 0$"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="data.on_bad_row: 'ignore' is not one of stop, skip"):
        DataConfig(on_bad_row="ignore")
    with pytest.raises(ConfigError, match="tasks.train: unknown task 'toy-medd'"):
        TasksConfig(train=["toy-medd"])
    with pytest.raises(ConfigError, match="train.batch_size: must be >= 1, got 0"):
        dataclasses.replace(SweepConfig().train, batch_size=0)  # replace builds anew


def test_cross_section_rules_sit_on_the_sweep():
    """Retention must not be trained on, unless MMLU is split into trained and kept subjects
    (a rule that needs both tasks and data, so neither section can check it alone)."""
    with pytest.raises(ConfigError, match="tasks.retention: 'toy-general' is also a training task"):
        SweepConfig(tasks=TasksConfig(train=["toy-general"]))
    mmlu = TasksConfig(train=["mmlu"], eval=["mmlu"], retention="mmlu")
    with pytest.raises(ConfigError, match="tasks.retention: 'mmlu' is also a training task"):
        SweepConfig(tasks=mmlu)
    SweepConfig(tasks=mmlu, data=DataConfig(mmlu_train_subjects=["anatomy"]))


def test_a_section_error_from_a_file_names_the_file_then_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: train.epochs: must be > 0, got 0.0"
    with pytest.raises(ConfigError) as err:  # the same mistake made by --set names the --set
        load_config(None, ["train.epochs=0"])
    assert str(err.value).startswith("--set train.epochs") and str(DEFAULT_CONFIG) not in str(
        err.value
    )


@pytest.mark.parametrize(
    "rule, ranks, alphas",
    [
        ("2r", [8, 16], [16.0, 32.0]),
        ("r", [4], [4.0]),
        ("0.5r", [3], [1.5]),
        ("16", [4, 64], [16.0, 16.0]),
    ],
)
def test_alpha_is_resolved_per_rank(rule, ranks, alphas):
    lora = LoraConfig(alpha=rule, ranks=ranks)
    assert [lora.alpha_for(r) for r in ranks] == alphas


@pytest.mark.parametrize(
    "rule, needle",
    [
        ("abc", "methods.lora.alpha: 'abc' is neither '<k>r' (e.g. '2r') nor a number"),
        ("-2r", "methods.lora.alpha: must be > 0, got '-2r'"),
        ("0", "methods.lora.alpha: must be > 0, got '0'"),
    ],
)
def test_a_bad_alpha_rule_is_refused_when_built(rule, needle):
    with pytest.raises(ConfigError) as err:
        LoraConfig(alpha=rule)
    assert str(err.value) == needle


def test_a_disabled_lora_section_is_not_checked_for_ranks_or_alpha():
    LoraConfig(enabled=False, ranks=[], alpha="abc", target_modules=[])


def test_run_ids_and_run_alphas_come_from_alpha_for():
    cfg = load_config(
        None, ["methods.lora.alpha=0.5r", "methods.lora.ranks=[3, 8]", "methods.lora.lr=1e-3"]
    )
    lora = [r for r in make_plan(cfg) if r.method == "lora"]
    assert {(r.rank, r.alpha) for r in lora} == {(3, 1.5), (8, 4.0)}
    assert any(r.run_id.endswith("__lora-r3-a1.5-lr1e-3__s0") for r in lora)
