"""`--force`: finished runs made with another config are refused, then redone when forced."""

from __future__ import annotations

import pytest
import yaml
from helpers import call_cli
from sweep_configs import one_lora_run

from rankscope.config import load_config
from rankscope.errors import ConfigError
from rankscope.pipeline import run_sweep

RUN = "toy-arith__lora-r4-a8-lr3e-3__s0"


def _sets(out, cache_dir, dropout: str) -> list[str]:
    # the dropout is in the config hash, not in the run id
    return one_lora_run("forced", out, cache_dir, f"methods.lora.dropout={dropout}")


def _hash(out) -> str:
    return yaml.safe_load((out / "runs" / RUN / "config.yaml").read_text())["config_hash"]


def test_a_changed_config_is_refused_then_redone_with_force(
    tmp_path, cache_dir, small_model_dir, monkeypatch, capsys
):
    out = tmp_path / "out"
    first = run_sweep(load_config(None, _sets(out, cache_dir, "0.05")), report=False)
    assert first.done == [RUN]
    old_hash, old_done = _hash(out), (out / "runs" / RUN / "DONE").read_text()

    changed = load_config(None, _sets(out, cache_dir, "0.1"))
    with pytest.raises(ConfigError, match="made with a different config.*--force"):
        run_sweep(changed, report=False)
    assert _hash(out) == old_hash  # refused: the finished run is untouched

    args = [x for s in _sets(out, cache_dir, "0.1") for x in ("--set", s)]
    code, err = call_cli(monkeypatch, capsys, "run", *args, "--force", stream="err")
    assert code == 0, f"exit {code}: {err}"
    new_hash = _hash(out)
    assert new_hash != old_hash  # redone under the new config...
    assert (out / "runs" / RUN / "DONE").read_text() == new_hash != old_done
    assert run_sweep(changed, report=False).skipped == [RUN]  # ...and now finished
