"""The tasks registry: a plain dict from name to Task. No torch imported here."""

from __future__ import annotations

from rankscope.tasks.base import Item, Task, TaskContext
from rankscope.tasks.toy import TOY_TASKS

TASKS: dict[str, Task] = {**TOY_TASKS}

__all__ = ["TASKS", "Item", "Task", "TaskContext"]
