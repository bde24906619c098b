"""The tasks registry: a plain dict from name to Task. No torch imported here.

The toy world's tasks (offline, embedded) and the paper's five benchmarks: gsm8k, mathqa,
mmlu (the retention probe), medmcqa and legalmcq (CaseHOLD), read from the hub or local
files per `data.source` (see rankscope.tasks.sources).
"""

from __future__ import annotations

from rankscope.tasks import gsm8k, legalmcq, mathqa, medmcqa, mmlu
from rankscope.tasks.base import Item, Task, TaskContext
from rankscope.tasks.toy import TOY_TASKS

BENCHMARKS: dict[str, Task] = {
    m.TASK.name: m.TASK for m in (gsm8k, mathqa, mmlu, medmcqa, legalmcq)
}
TASKS: dict[str, Task] = {**TOY_TASKS, **BENCHMARKS}

__all__ = ["BENCHMARKS", "TASKS", "Item", "Task", "TaskContext"]
