"""A sweep as a process sees it: its config, its output directory and its tasks' items.

The driver and every worker build one from the same resolved config (`sweep.yaml`, written
by the driver before any run starts, read by workers wherever the directory is mounted), so a
worker needs nothing from the driver's memory.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from rankscope.config import SweepConfig, dump_yaml, load_config
from rankscope.errors import ConfigError
from rankscope.plan import RunSpec, make_plan
from rankscope.rundir import SweepDir, write_atomic
from rankscope.stages import Stages
from rankscope.tasks import TASKS, Item, TaskContext
from rankscope.tasks.base import carve_val, check_no_overlap
from rankscope.world.generator import spec_for


def task_context(cfg: SweepConfig) -> TaskContext:
    return TaskContext(
        world_spec=spec_for(cfg.model.world, cfg.model.world_seed),
        data=cfg.data,
        train_tasks=tuple(cfg.tasks.train),
    )


class Sweep:
    """A sweep's config, output dir and tasks' items (loaded once per process)."""

    def __init__(self, cfg: SweepConfig, stages: Stages | None = None):
        self.cfg = cfg
        self.out = cfg.out_dir
        self.dir = SweepDir(self.out)
        self.stages = stages or Stages()
        self.ctx = task_context(cfg)
        self._items: dict[tuple[str, str], list[Item]] = {}

    def items(self, task: str, split: str) -> list[Item]:
        """A split's items: train, val (where lr is chosen) or test. A task without a
        validation split of its own gives `data.val_fraction` of its training items to it."""
        key = (task, split)
        if key not in self._items:
            t, spec = self.cfg.tasks, TASKS[task]
            limit = t.max_train_items if split == "train" else t.max_eval_items
            if split == "test" or "val" in spec.splits:
                self._items[key] = spec.items(split, self.ctx, limit)
            else:
                train, val = carve_val(spec.items("train", self.ctx), self.cfg.data.val_fraction)
                self._items[(task, "train")] = train[:limit] if t.max_train_items else train
                self._items[(task, "val")] = val[: t.max_eval_items] if t.max_eval_items else val
        return self._items[key]

    def has_val(self, task: str) -> bool:
        """Whether the task has a validation split (a test-only task such as a retention
        probe has none: it is never trained on)."""
        return "val" in TASKS[task].splits or "train" in TASKS[task].splits

    def check_leaks(self) -> None:
        """Refuse eval items that also occur in a training set. Compared zero-shot: few-shot
        exemplars in the eval prompts would hide a leaked question from the hash."""
        ctx = self.ctx
        if self.cfg.data.shots:
            ctx = dataclasses.replace(ctx, data=dataclasses.replace(self.cfg.data, shots=0))
        limit = self.cfg.tasks.max_eval_items
        for et in self.cfg.tasks.eval:
            evals = TASKS[et].items("test", ctx, limit) if ctx is not self.ctx else None
            for tt in self.cfg.tasks.train:
                check_no_overlap(tt, self.items(tt, "train"), et, evals or self.items(et, "test"))

    def run_dir(self, run: RunSpec | str) -> Path:
        return self.dir.run(run if isinstance(run, str) else run.run_id).path


_SWEEPS: dict[str, Sweep] = {}


def sweep_for(cfg: SweepConfig) -> Sweep:
    """This process's Sweep for a config: the in-process path reuses its items across runs."""
    key = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    if key not in _SWEEPS:
        _SWEEPS.clear()
        _SWEEPS[key] = Sweep(cfg)
    return _SWEEPS[key]


def write_sweep_file(cfg: SweepConfig, sweep_dir: Path) -> None:
    """The resolved sweep config, which workers read (written before any run starts)."""
    write_atomic(SweepDir(Path(sweep_dir)).sweep_file, dump_yaml(cfg.to_dict()))


def read_sweep_file(sweep_dir: Path) -> SweepConfig:
    path = SweepDir(Path(sweep_dir)).sweep_file
    if not path.is_file():
        raise ConfigError(f"{path}: not found; is {sweep_dir} a sweep's output directory?")
    cfg = load_config(path)
    return dataclasses.replace(cfg, output_dir=str(sweep_dir))  # wherever it is mounted now


def find_run(cfg: SweepConfig, run_id: str) -> RunSpec:
    runs = {r.run_id: r for r in make_plan(cfg)}
    if run_id not in runs:
        raise ConfigError(f"run id {run_id!r} is not in the sweep's plan; known: {', '.join(runs)}")
    return runs[run_id]
