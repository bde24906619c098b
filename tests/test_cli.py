"""The command line as a user meets it: instant help, one clear message per bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import run_cli


def test_help_does_not_import_torch():
    code = (
        "import sys; sys.argv=['rankscope','--help']\n"
        "from rankscope.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported by --help'\n"
        "assert 'transformers' not in sys.modules\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "plan" in res.stdout and "run" in res.stdout


def test_plan_lists_the_grid():
    sets = ["methods.lora.ranks=[4,16]", "tasks.train=[toy-med]", "methods.lora.lr=5e-4"]
    res = run_cli("plan", *(x for s in [*sets, "methods.full.lr=5e-4"] for x in ("--set", s)))
    assert res.returncode == 0, res.stderr
    for rid in ("base", "toy-med__full-lr5e-4__s0", "toy-med__lora-r4-a8-lr5e-4__s0"):
        assert rid in res.stdout
    # trainable share of the run's model, adapter included (as PEFT and the report count it)
    cells = {}
    for line in res.stdout.splitlines():
        parts = [p.strip() for p in line.split("│") if p.strip()]
        if parts and parts[0] in ("toy-med__full-lr5e-4__s0", "toy-med__lora-r16-a32-lr5e-4__s0"):
            count, pct = parts[-2].split()
            cells[parts[0]] = (float(count.rstrip("k")) * 1e3, float(pct.strip("(%)")))
    total, full_pct = cells["toy-med__full-lr5e-4__s0"]
    lora, lora_pct = cells["toy-med__lora-r16-a32-lr5e-4__s0"]
    assert full_pct == 100
    assert lora_pct == pytest.approx(100 * lora / (total + lora), abs=0.05)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["plan", "--set", "methods.lora.rankz=[4]"], "did you mean 'ranks'"),
        (["plan", "--set", "train.epochs=-1"], "train.epochs: must be > 0"),
        (["plan", "--set", "tasks.eval=[toy-nope]"], "unknown task 'toy-nope'"),
        (["run", "does/not/exist.yaml"], "config file not found"),
        (["status", "/nonexistent/dir"], "no results.sqlite here"),
    ],
)
def test_bad_input_is_one_message_exit_2_no_traceback(args, needle, tmp_path):
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert needle in " ".join(res.stderr.split())
    assert "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_malformed_yaml_via_cli_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmethods:\n  lora: {ranks: [4,\n")
    res = run_cli("run", str(bad), cwd=tmp_path)
    assert res.returncode == 2 and "malformed YAML at line" in " ".join(res.stderr.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_offline_hub_id_fails_fast_with_advice(tmp_path):
    res = run_cli(
        "run",
        "--set",
        "model.name=org/no-such-model",
        "--set",
        "tasks.train=[toy-med]",
        "-o",
        str(tmp_path / "out"),
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert res.returncode == 2, res.stderr
    assert "local model directory" in " ".join(res.stderr.split())
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(tmp_path):
    res = run_cli("--debug", "plan", "--set", "train.epochs=0", cwd=tmp_path)
    assert res.returncode != 0 and "Traceback" in res.stderr
