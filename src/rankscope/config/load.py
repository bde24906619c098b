"""Reading a sweep config: YAML file + `--set` overrides -> a checked `SweepConfig`.

`_build` type-checks each key against its dataclass field and constructs the section; the
section's `__post_init__` checks the values. Every ConfigError raised on the way, from a
type or from a value, names where the value came from: the file (`FILE: train.epochs: must
be > 0, got 0`) or the `--set` that gave it (`--set train.epochs: must be > 0, got 0`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from rankscope.config.sweep import SweepConfig
from rankscope.errors import ConfigError, did_you_mean

PACKAGED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = PACKAGED_CONFIGS / "toy.yaml"


class _NotFinite(ConfigError):
    """A number that is inf or nan: refused as such, not tried as another type of a union."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp` (after YAML parsing) and convert mildly."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except _NotFinite:
                raise
            except ConfigError:
                if isinstance(value, dict) and typing.get_origin(arg) is dict:
                    raise  # a mapping where one may stand: its own message names the entry
                continue
        names = " or ".join(_type_name(a) for a in args)
        raise ConfigError(f"{where}: expected {names}, got {value!r}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict) or not value:
            raise ConfigError(f"{where}: expected a non-empty mapping, got {value!r}")
        return {
            _coerce(k, key_tp, f"{where} key {k!r}"): _coerce(v, value_tp, f"{where}.{k}")
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of keys, got {value!r}")
        return _build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = _float(value)
        if number is not None:
            if not math.isfinite(number):
                raise _NotFinite(f"{where}: must be a finite number, got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def _float(value: Any) -> float | None:
    """The number `value` is (YAML 1.1 reads '5e-5' as a string), or None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    """`cls(**data)` with every key known and type-checked; constructing it runs the
    section's own value checks (`__post_init__`)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(
                f"{_join(where, key)}: unknown key{did_you_mean(str(key), names)};"
                f" valid keys here: {', '.join(names)}"
            )
    kwargs = {k: _coerce(v, hints[k], _join(where, k)) for k, v in data.items()}
    return cls(**kwargs)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def parse_set(assignments: list[str]) -> dict[str, Any]:
    """`--set a.b=value` (value parsed as YAML, so `[4,16]` is a list) -> nested dict. The
    same key given again replaces the earlier value; a key given both a value and a sub-key
    (`train.epochs=1` and `train.epochs.x=2`) is refused."""
    out: dict[str, Any] = {}
    given: dict[str, str] = {}  # a key given a non-mapping value -> its --set
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.epochs=2")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        _set_at(out, parts, value, item, given)
    return out


def _set_at(out: dict, parts: list[str], value: Any, item: str, given: dict[str, str]) -> None:
    """`out[parts[0]]...[parts[-1]] = value`, refusing a key that is both a value and a
    section (the message names both `--set`s)."""
    key = ".".join(parts)
    for i in range(1, len(parts)):
        if (prefix := ".".join(parts[:i])) in given:
            raise ConfigError(
                f"--set {key}: conflicts with --set {given[prefix]} ({prefix} cannot be both a "
                "value and a section of keys); give one of them"
            )
    below = [k for k in given if k.startswith(key + ".")]
    if below and not isinstance(value, dict):
        raise ConfigError(
            f"--set {key}: conflicts with --set {given[below[0]]} ({key} cannot be both a "
            "value and a section of keys); give one of them"
        )
    node = out
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    if not isinstance(value, dict):
        given[key] = item


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


class _DuplicateKey(Exception):
    """A mapping key given twice; read_yaml adds the file name."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a mapping key given twice. PyYAML keeps the last one
    silently, so a second `train:` section would quietly replace the first one's settings."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._paths: dict[yaml.Node, str] = {}  # a node -> its dotted path (for the message)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        where = self._paths.get(node, "")
        lines: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            path = _join(where, str(key))
            self._paths[value_node] = path
            line = key_node.start_mark.line + 1
            try:
                first = lines.get(key)
            except TypeError:  # an unhashable key: SafeLoader's own error names it
                continue
            if first is not None:
                raise _DuplicateKey(f"key {path!r} is given twice (lines {first} and {line})")
            lines[key] = line
        return super().construct_mapping(node, deep)

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> list:
        where = self._paths.get(node, "")
        for i, child in enumerate(node.value):
            self._paths[child] = f"{where}[{i}]"
        return super().construct_sequence(node, deep)


def _decode(path: Path, raw: bytes) -> str:
    """The file's text; a byte that is not UTF-8 is named by line and offset (a config saved
    as latin-1 or UTF-16 would otherwise fail deep inside the YAML reader)."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            f"{path}: line {line}: byte 0x{raw[e.start]:02x} (byte offset {e.start}) is not "
            "valid UTF-8; a config file must be UTF-8 text: re-save it as UTF-8"
        ) from None


def read_yaml(path: Path) -> dict[str, Any]:
    """The YAML file's top-level mapping; every way it can be unreadable is a ConfigError
    naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = _decode(path, path.read_bytes())
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: {e}; keep one") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        loc = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError(f"{path}: malformed YAML at {loc}: {e.problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: malformed YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return data


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> SweepConfig:
    """Read, override, type-check and validate a sweep config (each section validates itself
    as it is built, then SweepConfig checks what spans sections)."""
    src = Path(path) if path else DEFAULT_CONFIG
    file_data = read_yaml(src)
    data = _merge(file_data, parse_set(overrides or []))
    try:
        return _build(SweepConfig, data, "")
    except ConfigError as e:
        raise blame(e, src, overrides or [], file_data) from None


def _field_of(message: str) -> str:
    """The dotted field a message starts with (`methods.lora.ranks[0]: ...` ->
    `methods.lora.ranks`), or ''."""
    head = message.split(": ", 1)[0] if ": " in message else ""
    return re.sub(r"\[\d+\]", "", head) if re.fullmatch(r"[\w.\[\]-]+", head) else ""


def _set_keys(overrides: list[str]) -> dict[str, str]:
    """Each `--set` key -> the `--set` as given (the last one where a key is given twice)."""
    return {item.split("=", 1)[0].strip(): item for item in overrides if "=" in item}


def blame(
    error: ConfigError,
    path: Path | None,
    overrides: list[str],
    file_data: dict[str, Any] | None = None,
) -> ConfigError:
    """`error` with its source in front: `--set` when the field it names (or a section
    holding it) was given by `--set`; else, when the file alone (`file_data`) is valid, the
    `--set`s that made it invalid; else the config file (`path`, default the embedded toy
    sweep's)."""
    message, field = str(error), _field_of(str(error))
    keys = _set_keys(overrides)
    if field and any(field == k or field.startswith(k + ".") for k in keys):
        return ConfigError(f"--set {message}")
    named = [item for k, item in keys.items() if field and k.startswith(field + ".")]
    if not named and keys and file_data is not None and _valid(file_data):
        section = field.split(".", 1)[0]  # `tasks.retention` after `--set tasks.eval=[..]`
        named = [item for k, item in keys.items() if k.split(".", 1)[0] == section]
        named = named or list(keys.values())
    if named:
        return ConfigError(f"{message} (after --set {', --set '.join(named)})")
    return ConfigError(f"{Path(path) if path else DEFAULT_CONFIG}: {message}")


def sourced(error: ConfigError, path: Path | None, overrides: list[str]) -> ConfigError:
    """A ConfigError raised after loading (a rank the model cannot take) with its source in
    front, like `load_config`'s own: only one that names a config field; others (a data
    file's) already name their file and are returned as they are."""
    top = _field_of(str(error)).split(".", 1)[0]
    if top not in {f.name for f in dataclasses.fields(SweepConfig)}:
        return error
    return blame(error, path, overrides)


def _valid(data: dict[str, Any]) -> bool:
    try:
        _build(SweepConfig, data, "")
    except ConfigError:
        return False
    return True


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
