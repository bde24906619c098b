"""The shared readers: line numbers, quirks of the real files, bad data, skip mode, the hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from task_helpers import FIXTURES

from rankscope.config import DataConfig
from rankscope.errors import ConfigError, DataError
from rankscope.tasks import BENCHMARKS, TASKS
from rankscope.tasks.sources import (
    SKIPPED,
    RowError,
    data_file,
    hub_rows,
    in_holdout,
    json_object,
    parse_rows,
    read_csv_rows,
    read_json_array,
    read_jsonl,
)


def test_registry_holds_the_five_benchmarks():
    kinds = {name: TASKS[name].kind for name in BENCHMARKS}
    assert kinds == {
        "gsm8k": "gen",
        "mathqa": "mcq",
        "mmlu": "mcq",
        "medmcqa": "mcq",
        "legalmcq": "mcq",
    }
    assert all(TASKS[n].description for n in kinds)
    # MMLU has a validation split of its own; the others give one carved from training
    assert {n: TASKS[n].splits for n in kinds} == {
        **{n: ("train", "test") for n in kinds},
        "mmlu": ("train", "val", "test"),
    }


def test_loading_imports_neither_torch_nor_datasets():
    code = textwrap.dedent(
        f"""
        import sys
        from rankscope.config import DataConfig
        from rankscope.tasks import TASKS, TaskContext
        ctx = TaskContext(data=DataConfig(source="files", dir={str(FIXTURES)!r},
                                          mmlu_subjects=["anatomy"]))
        for name in ("gsm8k", "mathqa", "mmlu", "medmcqa", "legalmcq"):
            assert TASKS[name].load("test", ctx)
        print(sorted(m for m in ("torch", "datasets", "transformers") if m in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_csv_records_start_lines_multiline_fields_and_inner_bom():
    path = FIXTURES / "mmlu" / "test" / "college_medicine_test.csv"
    rows = read_csv_rows(path)
    lines = path.read_text(encoding="utf-8-sig").split("\n")
    assert len(rows) == 50 and all(len(r.raw) == 6 for r in rows)
    multi = [r for r in rows if any("\n" in f for f in r.raw)]
    assert len(multi) == 4  # quoted fields spanning lines stay whole
    for r in rows:  # `line` is where the record starts
        assert lines[r.line - 1].lstrip('"').startswith(r.raw[0].split("\n")[0][:30])
    assert "\ufeff" in path.read_text(encoding="utf-8-sig")  # the stray BOM is real ...
    assert not any("\ufeff" in f for r in rows for f in r.raw)  # ... and removed
    assert rows[49].raw[0].endswith("C2H4 + O2 —> CO2 + H2O") and rows[49].line == 59


def test_json_array_elements_know_their_line():
    path = FIXTURES / "mathqa" / "dev.json"
    rows = read_json_array(path)
    lines = path.read_text().split("\n")
    assert len(rows) == len(json.loads(path.read_text())) == 45
    assert [r.index for r in rows] == list(range(45))
    assert all(lines[r.line - 1].strip() == "{" for r in rows)
    problems = [json.loads("{" + lines[r.line].rstrip(",") + "}")["Problem"] for r in rows]
    assert problems == [r.raw["Problem"] for r in rows]


@pytest.mark.parametrize(
    "text, why, line",
    [
        ("", "file is empty", None),
        ("[]", "file is empty", None),
        ('{"a": 1}\n{"a": 2}\n', "expected one JSON array", 1),
        ('[\n {"a": 1},\n {"a": 2,\n}\n]', "malformed JSON", 4),
        ('[\n {"a": 1}\n {"a": 2}\n]', "expected ',' or ']'", 3),
        ('[\n {"a": 1},\n', "array not closed|malformed JSON", None),
        ('[{"a": 1}] trailing', "array not closed", 1),
    ],
)
def test_json_array_errors(tmp_path, text, why, line):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(DataError, match=why) as e:
        read_json_array(path)
    assert str(e.value).startswith(f"{path}:{line}:" if line else str(path))


def test_jsonl_skips_blank_lines_and_keeps_line_numbers(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"a": 2}\n')
    assert [(r.line, r.index) for r in read_jsonl(path)] == [(1, 0), (4, 3)]
    with pytest.raises(RowError, match="malformed JSON"):
        json_object("{nope")


def test_cache_sees_a_rewritten_file(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n')
    first = read_jsonl(path)
    assert read_jsonl(path) is first  # cached
    path.write_text('{"a": 1}\n{"a": 2}\n')
    assert len(read_jsonl(path)) == 2


def test_parse_rows_stop_and_skip(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"n": 1}\n{"n": -1}\n{"n": 3}\n{"n": -4}\n')

    def parse(raw: str) -> int:
        n = json_object(raw)["n"]
        if n < 0:
            raise RowError(f"n must be >= 0, got {n}")
        return n

    with pytest.raises(DataError, match=r"x.jsonl:2: n must be >= 0, got -1 \(set data.on_bad"):
        parse_rows(str(path), read_jsonl(path), parse, "stop")
    with pytest.warns(
        UserWarning, match=r"x.jsonl: skipped 2 malformed row\(s\) \(first at line 2"
    ):
        kept = parse_rows(str(path), read_jsonl(path), parse, "skip")
    assert [n for _, n in kept] == [1, 3] and SKIPPED[str(path)] == 2
    path.write_text('{"n": -1}\n')
    with pytest.warns(UserWarning), pytest.raises(DataError, match="every row is malformed"):
        parse_rows(str(path), read_jsonl(path), parse, "skip")


def test_missing_dir_file_and_unset_dir(tmp_path):
    with pytest.raises(ConfigError, match="data.dir: not set"):
        data_file(DataConfig(source="files"), "gsm8k/test.jsonl", "gsm8k/test.jsonl")
    with pytest.raises(DataError, match="data.dir does not exist .expected a folder holding"):
        data_file(DataConfig(source="files", dir=str(tmp_path / "no")), "a", "gsm8k/...")
    with pytest.raises(DataError, match="gsm8k/test.jsonl: file not found; data.dir must hold"):
        data_file(DataConfig(source="files", dir=str(tmp_path)), "gsm8k/test.jsonl", "x")


def test_holdout_is_stable_normalised_and_near_the_fraction():
    texts = [f"question number {i} about something" for i in range(2000)]
    share = sum(in_holdout(t, 0.2) for t in texts) / len(texts)
    assert 0.17 < share < 0.23
    assert [in_holdout(t, 0.2) for t in texts] == [in_holdout(t, 0.2) for t in texts]
    assert in_holdout("What is X?", 0.5) == in_holdout("  what is x ", 0.5)


def test_a_hub_failure_is_one_data_error(fake_hub):
    fake_hub({("openai/gsm8k", "main", "test"): ConnectionError("Couldn't reach 'openai/gsm8k'")})
    with pytest.raises(DataError) as e:
        hub_rows("openai/gsm8k", "main", "test")
    msg = str(e.value)
    assert "openai/gsm8k (main) split 'test'" in msg and "ConnectionError" in msg
    assert "set data.source: files and data.dir" in msg


def test_offline_hub_load_fails_cleanly(tmp_path):
    """The real `datasets`, offline and with an empty cache, through a task loader."""
    code = textwrap.dedent(
        """
        from rankscope.errors import DataError
        from rankscope.tasks import TASKS, TaskContext
        try:
            TASKS["gsm8k"].load("test", TaskContext())
        except DataError as e:
            print(e)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["HF_HOME"] = str(tmp_path / "hf")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "could not load openai/gsm8k (main) split 'test'" in out.stdout
    assert "data.source: files" in out.stdout
