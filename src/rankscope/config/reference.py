"""The config reference (README and docs/config.md tables), read from the dataclasses: each
field's default and its attribute docstring, so the documentation cannot drift from the code."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import textwrap

from rankscope.config.sweep import SweepConfig


def _attribute_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal right after a field), read from the source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())  # type: ignore[attr-defined]
    return docs


def config_reference(cls: type = SweepConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, meaning) for every leaf key of the config, in declaration order."""
    rows: list[tuple[str, str, str]] = []
    docs = _attribute_docs(cls)
    default = cls()
    for f in dataclasses.fields(cls):
        value = getattr(default, f.name)
        if dataclasses.is_dataclass(value):
            rows += config_reference(type(value), f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", json.dumps(value), docs.get(f.name, "")))
    return rows
