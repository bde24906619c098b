"""The README stays true: every config key is documented, the two commands exist."""

from __future__ import annotations

from pathlib import Path

from rankscope.config import config_reference

ROOT = Path(__file__).resolve().parents[1]


def test_every_config_key_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [key for key, _, _ in config_reference() if f"`{key}`" not in readme]
    assert not missing, f"README config reference lacks: {missing}"


def test_every_config_key_has_a_docstring():
    assert all(meaning for _, _, meaning in config_reference())


def test_readme_commands_exist_and_ci_calls_the_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/run.sh" in readme and "bash scripts/test.sh" in readme
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
