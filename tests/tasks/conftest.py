"""Fixtures for the benchmark loaders: the fixture data root, a fake hub, real lm-eval tasks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from task_helpers import FIXTURES, lm_eval_yaml  # noqa: F401 (re-exported for fixtures)

from rankscope.config import DataConfig
from rankscope.tasks import TaskContext
from rankscope.tasks.sources import clear_cache


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Loaders cache rows per file and hub split; every test starts from nothing."""
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def ctx() -> Callable[..., TaskContext]:
    """ctx(train_tasks=(...), **data_fields): a TaskContext reading the fixture files."""

    def make(train_tasks: tuple[str, ...] = (), **data: Any) -> TaskContext:
        data.setdefault("source", "files")
        data.setdefault("dir", str(FIXTURES))
        return TaskContext(data=DataConfig(**data), train_tasks=tuple(train_tasks))

    return make


@pytest.fixture
def fake_hub(monkeypatch) -> Callable[[dict], list]:
    """fake_hub({(path, name, split): rows | Exception}) serves `datasets.load_dataset`.

    Rows become real `datasets.Dataset`s; the returned list records every call. A key not
    in the table fails like an unknown dataset does.
    """
    import datasets

    def install(tables: dict[tuple[str, str | None, str], Any]) -> list:
        calls: list[tuple[str, str | None, str]] = []

        def load_dataset(path: str, name: str | None = None, split: str | None = None, **kw):
            calls.append((path, name, split))
            value = tables.get((path, name, split))
            if value is None:
                raise FileNotFoundError(f"Dataset '{path}' doesn't exist on the Hub")
            if isinstance(value, Exception):
                raise value
            return datasets.Dataset.from_list(value)

        monkeypatch.setattr(datasets, "load_dataset", load_dataset)
        return calls

    return install


@pytest.fixture
def lm_eval_task() -> Callable[..., Any]:
    """lm_eval_task(rel_yaml, {split: rows}, **overrides) -> the harness's own task object,
    reading the given rows instead of the hub, so prompts can be compared with ours."""

    def make(rel: str, splits: dict[str, list[dict]], **overrides: Any):
        import datasets
        from lm_eval.api.task import ConfigurableTask

        cfg = lm_eval_yaml(rel)
        cfg.pop("tag", None)
        dd = datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})
        cfg["custom_dataset"] = lambda **kw: dd
        cfg.update(overrides)
        return ConfigurableTask(config=cfg)

    return make
