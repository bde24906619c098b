"""Every kind of bad input, as a user meets it through the CLI: one message naming the
file/field/line and what would be valid, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import call_cli

FIXTURES = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer Llama (d=32) saved as a local model dir: loads in a second, no toy world."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rankscope.world.tiny import build_tokenizer

    path = tmp_path_factory.mktemp("tiny-llama")
    tok = build_tokenizer([line for line in (FIXTURES / "gsm8k" / "train.jsonl").open()])
    tok.save_pretrained(path)
    conf = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    LlamaForCausalLM(conf).save_pretrained(path)
    return path


def expect_refusal(monkeypatch, capsys, out: Path, args: list[str], *needles: str) -> str:
    code, text = call_cli(monkeypatch, capsys, "run", *args, "-o", str(out))
    assert code == 2, text
    for needle in needles:
        assert needle in text, text
    assert "Traceback" not in text
    assert not out.exists(), "a refused sweep must write nothing"
    return text


@pytest.mark.parametrize(
    "override, needles",
    [
        ("methods.lora.rankz=[4]", ["methods.lora.rankz: unknown key", "did you mean 'ranks'"]),
        ("train.epochs=many", ["train.epochs: expected float"]),
        ("train.epochs=0", ["train.epochs: must be > 0"]),
        ("methods.lora.ranks=[0,8]", ["methods.lora.ranks", "positive integer"]),
        ("methods.lora.ranks=[8.5]", ["methods.lora.ranks[0]: expected int"]),
        ("methods.lora.alpha=0", ["methods.lora.alpha: must be > 0"]),
        ("methods.full.lr=-1e-5", ["methods.full.lr: must be > 0"]),
        ("methods.lora.lr=0", ["methods.lora.lr: must be > 0"]),
        ("tasks.train=[gsm8kk]", ["unknown task 'gsm8kk'", "did you mean 'gsm8k'"]),
        ("methods.qlora={}", ["methods.qlora: unknown key", "valid keys here: base, full, lora"]),
        (
            "executor.kind=kubernetes",
            ["executor.kind: 'kubernetes' is not one of local, slurm, ray"],
        ),
        ("data.on_bad_row=ignore", ["data.on_bad_row: 'ignore' is not one of stop, skip"]),
    ],
)
def test_bad_config_values(monkeypatch, capsys, tmp_path, override, needles):
    expect_refusal(monkeypatch, capsys, tmp_path / "out", ["--set", override], *needles)


def test_malformed_yaml_names_file_and_line(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain:\n\tepochs: 3\n")
    expect_refusal(monkeypatch, capsys, tmp_path / "out", [str(bad)], str(bad), "line 3")


def test_unknown_model_offline(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expect_refusal(
        monkeypatch,
        capsys,
        tmp_path / "out",
        ["--set", "model.name=nobody/no-such-model"],
        "model.name: 'nobody/no-such-model'",
        "local model directory",
    )


def _real(tiny_model: Path, data_dir: Path, *extra: str) -> list[str]:
    sets = [
        f"model.name={tiny_model}",
        "data.source=files",
        f"data.dir={data_dir}",
        "tasks.train=[gsm8k]",
        "tasks.eval=[gsm8k, mmlu]",
        "tasks.retention=mmlu",
        *extra,
    ]
    return [arg for s in sets for arg in ("--set", s)]


def test_rank_above_the_layer_dimension(monkeypatch, capsys, tmp_path, tiny_model):
    args = _real(tiny_model, FIXTURES, "methods.lora.ranks=[8,64]")
    expect_refusal(
        monkeypatch, capsys, tmp_path / "out", args, "rank 64 exceeds min(d_in, d_out) = 32"
    )


def test_target_modules_that_match_nothing(monkeypatch, capsys, tmp_path, tiny_model):
    args = _real(tiny_model, FIXTURES, "methods.lora.target_modules=[q_proj, query]")
    expect_refusal(
        monkeypatch, capsys, tmp_path / "out", args, "['query'] match no linear layer", "v_proj"
    )


def _copy_data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(FIXTURES, data)
    return data


def test_model_dir_without_tokenizer(monkeypatch, capsys, tmp_path, tiny_model):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(tiny_model / "config.json", bare / "config.json")
    args = _real(bare, FIXTURES)
    expect_refusal(monkeypatch, capsys, tmp_path / "out", args, "no tokenizer files")


def test_missing_data_dir(monkeypatch, capsys, tmp_path, tiny_model):
    args = _real(tiny_model, tmp_path / "nowhere")
    expect_refusal(monkeypatch, capsys, tmp_path / "out", args, str(tmp_path / "nowhere"))


def test_empty_data_file(monkeypatch, capsys, tmp_path, tiny_model):
    data = _copy_data(tmp_path)
    (data / "gsm8k" / "train.jsonl").write_text("")
    args = _real(tiny_model, data)
    expect_refusal(monkeypatch, capsys, tmp_path / "out", args, "train.jsonl", "empty")


def test_malformed_row_names_file_and_line(monkeypatch, capsys, tmp_path, tiny_model):
    data = _copy_data(tmp_path)
    path = data / "gsm8k" / "train.jsonl"
    lines = path.read_text().splitlines()
    lines[6] = '{"question": "half a row'
    path.write_text("\n".join(lines) + "\n")
    args = _real(tiny_model, data)
    expect_refusal(monkeypatch, capsys, tmp_path / "out", args, "train.jsonl:7")


def test_answer_index_out_of_range(monkeypatch, capsys, tmp_path, tiny_model):
    data = _copy_data(tmp_path)
    path = data / "medmcqa" / "validation.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[2]["answer"] = 4
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = _real(tiny_model, data, "tasks.train=[medmcqa]", "tasks.eval=[medmcqa, mmlu]")
    expect_refusal(monkeypatch, capsys, tmp_path / "out", args, "validation.jsonl:3")


def test_output_dir_of_another_sweep(monkeypatch, capsys, tmp_path):
    from rankscope.rundir import STORE_NAME
    from rankscope.store import Store

    out = tmp_path / "out"
    out.mkdir()
    store = Store(out / STORE_NAME)
    store.set_meta({"sweep_name": "someone-else"})
    store.close()
    before = sorted(p.name for p in out.iterdir())
    code, text = call_cli(monkeypatch, capsys, "run", "--set", "name=mine", "-o", str(out))
    assert code == 2 and "holds results of sweep 'someone-else'" in text and "--force" in text
    assert sorted(p.name for p in out.iterdir()) == before


@pytest.mark.parametrize(
    "content, needles",
    [
        (  # saved as latin-1: 'é' is the single byte 0xe9
            "name: x\n# réglages du modèle\ntrain:\n  epochs: 2\n".encode("latin-1"),
            ["line 2", "byte 0xe9", "byte offset 11", "must be UTF-8 text"],
        ),
        (
            b"name: x\ntrain:\n  epochs: 2\nmodel:\n  name: toy\ntrain:\n  batch_size: 4\n",
            ["key 'train' is given twice (lines 2 and 6); keep one"],
        ),
        (
            b"name: x\ntrain:\n  epochs: 2\n  batch_size: 4\n  epochs: 3\n",
            ["key 'train.epochs' is given twice (lines 3 and 5); keep one"],
        ),
    ],
    ids=["not-utf8", "duplicate-section", "duplicate-nested-key"],
)
def test_unreadable_config_file(monkeypatch, capsys, tmp_path, content, needles):
    """Neither an internal error (a non-UTF-8 byte) nor a silent last-one-wins (a key given
    twice): one message naming the file and line(s), from `plan` and `run` alike."""
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    code, text = call_cli(monkeypatch, capsys, "plan", str(bad))
    assert code == 2 and str(bad) in text and "Traceback" not in text, text
    for needle in needles:
        assert needle in text, text
    expect_refusal(monkeypatch, capsys, tmp_path / "out", [str(bad)], str(bad), *needles)
