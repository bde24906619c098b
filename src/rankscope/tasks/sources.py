"""Reading benchmark rows from local files or the Hugging Face hub, with file:line errors.

Readers return `Row(line, index, raw)`: `line` is where the row starts in the file (for
messages), `index` its 0-based position (for stable item ids). `parse_rows` turns raw rows
into parsed ones with a task's parse function; a row it rejects (`RowError`) stops the load
with a `DataError` naming file:line, or with `data.on_bad_row: skip` is skipped, counted in
`SKIPPED` and reported by one warning per file. Nothing here imports torch; `datasets` is
imported only when a hub source is used.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import re
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from rankscope.errors import ConfigError, DataError
from rankscope.tasks.base import DataConfig

T = TypeVar("T")

SKIPPED: dict[str, int] = {}
"""Malformed rows skipped under `data.on_bad_row: skip`, per file (or hub split)."""


class RowError(ValueError):
    """One malformed row; the message says what is wrong, the caller adds file:line."""


class Row(NamedTuple):
    line: int
    index: int
    raw: Any


def data_config(ctx: Any) -> DataConfig:
    """The sweep's DataConfig, or the defaults when a context carries none."""
    data = getattr(ctx, "data", None)
    return data if data is not None else DataConfig()


def data_file(data: DataConfig, rel: str, layout: str) -> Path:
    """`data.dir / rel`, refusing a missing dir or file with the expected layout."""
    if not data.dir:
        raise ConfigError(
            "data.dir: not set, but data.source is 'files'; set data.dir to a folder laid out "
            "like shared/data (gsm8k/, mmlu/, medmcqa/, mathqa/, legalmcq/)"
        )
    root = Path(data.dir).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: data.dir does not exist (expected a folder holding {layout})")
    path = root / rel
    if not path.exists():
        raise DataError(f"{path}: file not found; data.dir must hold {layout}")
    return path


def _key(path: Path) -> tuple[str, int, int]:
    """Cache key that changes when the file does (tests rewrite files in tmp dirs)."""
    st = path.stat()
    return (str(path), st.st_mtime_ns, st.st_size)


def _nonempty(path: Path, rows: list[Row]) -> tuple[Row, ...]:
    if not rows:
        raise DataError(f"{path}: file is empty (no data rows)")
    return tuple(rows)


@functools.lru_cache(maxsize=64)
def _read_jsonl(key: tuple[str, int, int]) -> tuple[Row, ...]:
    path = Path(key[0])
    with path.open(encoding="utf-8") as f:
        rows = [Row(n, n - 1, text) for n, text in enumerate(f, 1) if text.strip()]
    return _nonempty(path, rows)


def read_jsonl(path: Path) -> tuple[Row, ...]:
    """Non-blank lines of a JSON Lines file; `raw` is the line's text (see `json_object`)."""
    return _read_jsonl(_key(path))


def json_object(text: str) -> dict[str, Any]:
    """One JSONL line -> dict, or RowError."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise RowError(f"malformed JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise RowError(f"expected a JSON object {{...}}, got {type(obj).__name__}")
    return obj


_WS = re.compile(r"\s*")


@functools.lru_cache(maxsize=16)
def _read_json_array(key: tuple[str, int, int]) -> tuple[Row, ...]:
    path = Path(key[0])
    text = path.read_text(encoding="utf-8")
    dec = json.JSONDecoder()
    pos, line = 0, 1

    def at(i: int) -> int:  # line of offset i, counted incrementally (files are MBs)
        nonlocal pos, line
        line += text.count("\n", pos, i)
        pos = i
        return line

    i = _WS.match(text, 0).end()
    if i == len(text):
        raise DataError(f"{path}: file is empty (no data rows)")
    if text[i] != "[":
        raise DataError(f"{path}:{at(i)}: expected one JSON array [{{...}}, ...] (not JSON Lines)")
    rows: list[Row] = []
    i = _WS.match(text, i + 1).end()
    while i < len(text) and text[i] != "]":
        try:
            obj, j = dec.raw_decode(text, i)
        except json.JSONDecodeError as e:
            # a broken element cannot be skipped: the array cannot be resynchronised
            raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
        rows.append(Row(at(i), len(rows), obj))
        i = _WS.match(text, j).end()
        if i < len(text) and text[i] == ",":
            i = _WS.match(text, i + 1).end()
        elif i >= len(text) or text[i] != "]":
            raise DataError(f"{path}:{at(min(i, len(text)))}: malformed JSON (expected ',' or ']')")
    if i >= len(text) or text[_WS.match(text, i + 1).end() :]:
        raise DataError(f"{path}:{at(min(i, len(text)))}: malformed JSON (array not closed)")
    return _nonempty(path, rows)


def read_json_array(path: Path) -> tuple[Row, ...]:
    """Elements of a file holding one JSON array; `line` is where each element starts."""
    return _read_json_array(_key(path))


@functools.lru_cache(maxsize=512)
def _read_csv(key: tuple[str, int, int]) -> tuple[Row, ...]:
    path = Path(key[0])
    rows: list[Row] = []
    # utf-8-sig drops a BOM at the file start; a stray BOM *inside* a quoted field
    # (MMLU test/college_medicine_test.csv) is removed from every field instead
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        start = 1
        try:
            for fields in reader:
                if fields:
                    rows.append(Row(start, len(rows), [c.replace("\ufeff", "") for c in fields]))
                start = reader.line_num + 1
        except csv.Error as e:
            raise DataError(f"{path}:{start}: malformed CSV ({e})") from None
    return _nonempty(path, rows)


def read_csv_rows(path: Path) -> tuple[Row, ...]:
    """Records of a header-less CSV file (quoted fields may span lines); `raw` = fields."""
    return _read_csv(_key(path))


def parse_rows(
    label: str,
    rows: Iterable[Row],
    parse: Callable[[Any], T],
    on_bad_row: str,
    unit: str = "line",
) -> list[tuple[Row, T]]:
    """Parse every row; a RowError stops (file:line) or, with on_bad_row 'skip', is counted."""
    out: list[tuple[Row, T]] = []
    skipped: list[int] = []
    for row in rows:
        try:
            out.append((row, parse(row.raw)))
        except RowError as e:
            where = f"{label}:{row.line}" if unit == "line" else f"{label} row {row.index}"
            if on_bad_row != "skip":
                raise DataError(
                    f"{where}: {e} (set data.on_bad_row: skip to skip bad rows)"
                ) from None
            skipped.append(row.line if unit == "line" else row.index)
    if skipped:
        SKIPPED[label] = len(skipped)
        warnings.warn(
            f"{label}: skipped {len(skipped)} malformed row(s) (first at {unit} {skipped[0]})",
            stacklevel=2,
        )
        if not out:
            raise DataError(f"{label}: every row is malformed ({len(skipped)} skipped)")
    return out


def need(row: dict[str, Any], key: str, kind: type | tuple[type, ...] = str) -> Any:
    """row[key] checked for presence and type, else RowError naming the field."""
    if key not in row or row[key] is None:
        raise RowError(f"missing field {key!r} (fields here: {', '.join(map(str, row))})")
    value = row[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise RowError(f"field {key!r} must be {names}, got {value!r}"[:200])
    return value


@functools.lru_cache(maxsize=32)
def hub_rows(path: str, name: str | None, split: str) -> tuple[Row, ...]:
    """Rows of a hub dataset split as dicts; any failure is one DataError saying what to do."""
    what = f"{path}{f' ({name})' if name else ''} split {split!r}"
    try:
        import datasets

        ds = datasets.load_dataset(path, name, split=split)
        rows = tuple(Row(i + 1, i, dict(r)) for i, r in enumerate(ds))
    except Exception as e:  # offline, missing dataset, script-only dataset, auth ...
        raise DataError(
            f"could not load {what} from the Hugging Face hub ({type(e).__name__}: "
            f"{str(e)[:300]}). Without network access set data.source: files and data.dir: "
            "a folder laid out like shared/data (gsm8k/, mmlu/, medmcqa/, mathqa/, legalmcq/)"
        ) from None
    if not rows:
        raise DataError(f"{what} on the hub is empty")
    return rows


def hub_label(path: str, name: str | None, split: str) -> str:
    return f"hub {path}{f'/{name}' if name else ''}[{split}]"


def in_holdout(text: str, fraction: float) -> bool:
    """Stable test/train assignment by a hash of the normalised text (no RNG, no order)."""
    norm = re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()
    h = int(hashlib.sha1(norm.encode()).hexdigest()[:15], 16)
    return h / 16**15 < fraction


def clear_cache() -> None:
    """Forget cached file and hub rows and the skip counts (tests, long sessions)."""
    for fn in (_read_jsonl, _read_json_array, _read_csv, hub_rows):
        fn.cache_clear()
    SKIPPED.clear()
