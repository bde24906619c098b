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
from rankscope.decontam import (
    Decontamination,
    EvalIndex,
    Overlap,
    decontaminate,
    index_eval,
    write_decontamination,
)
from rankscope.errors import ConfigError, DataError
from rankscope.plan import RunSpec, make_plan
from rankscope.rundir import SweepDir, write_atomic
from rankscope.stages import Stages
from rankscope.tasks import TASKS, Item, TaskContext
from rankscope.tasks.base import carve_val, subset
from rankscope.world.generator import spec_for


def zero_shot(ctx: TaskContext) -> TaskContext:
    """The context with every few-shot setting (`data.shots`, `data.gsm8k_shots` ...) at 0."""
    if ctx.data is None:
        return ctx
    shots = {f.name: 0 for f in dataclasses.fields(ctx.data) if f.name.endswith("shots")}
    return dataclasses.replace(ctx, data=dataclasses.replace(ctx.data, **shots))


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
        self._carved: dict[str, tuple[list[Item], list[Item]]] = {}
        self._train: dict[str, list[Item]] = {}
        self._overlaps: dict[str, list[Overlap]] = {}
        self._indexes: dict[str, EvalIndex] | None = None

    def items(self, task: str, split: str) -> list[Item]:
        """A split's items: train, val (where lr is chosen) or test, each cut to
        `tasks.max_*_items` by `subset`. A task without a validation split of its own gives
        `data.val_fraction` of its training items to it; training items an eval item
        contaminates are dropped first (`rankscope.decontam`)."""
        key = (task, split)
        if key not in self._items:
            t = self.cfg.tasks
            limit = t.max_train_items if split == "train" else t.max_eval_items
            self._items[key] = subset(self._whole(task, split), limit)
        return self._items[key]

    def _whole(self, task: str, split: str) -> list[Item]:
        """A split's items before any subset."""
        spec = TASKS[task]
        if split == "test" or (split == "val" and "val" in spec.splits):
            return spec.items(split, self.ctx)
        if split == "val":
            return self._carve(task)[1]
        if task not in self._train:
            train = spec.items("train", self.ctx) if "val" in spec.splits else self._carve(task)[0]
            self._train[task] = self._decontaminate(task, train)
        return self._train[task]

    def _carve(self, task: str) -> tuple[list[Item], list[Item]]:
        if task not in self._carved:
            items = TASKS[task].items("train", self.ctx)
            self._carved[task] = carve_val(items, self.cfg.data.val_fraction)
        return self._carved[task]

    def _decontaminate(self, task: str, train: list[Item]) -> list[Item]:
        """The training items no eval task's test item contaminates (`rankscope.decontam`),
        the same in the driver and every worker: each computes them from the same data."""
        kept, overlaps = decontaminate(task, train, self._eval_indexes())
        self._overlaps[task] = overlaps
        if not kept:
            raise DataError(
                f"training task {task!r}: every one of its {len(train)} training items "
                "overlaps an eval task's test items; nothing is left to train on"
            )
        return kept

    def _eval_indexes(self) -> dict[str, EvalIndex]:
        """Every eval task's whole test split (not a subset: training never sees a test
        question), zero-shot: few-shot exemplars are not the question."""
        if self._indexes is None:
            ctx = zero_shot(self.ctx)
            self._indexes = {
                et: index_eval(TASKS[et].items("test", ctx)) for et in self.cfg.tasks.eval
            }
        return self._indexes

    def has_val(self, task: str) -> bool:
        """Whether the task has a validation split (a test-only task such as a retention
        probe has none: it is never trained on)."""
        return "val" in TASKS[task].splits or "train" in TASKS[task].splits

    def check_leaks(self) -> Decontamination:
        """Drop from every training task the items an eval item contaminates (a near-duplicate
        by GPT-3's 13-gram rule); what was dropped, per (train task, eval task). Eval items
        are never dropped, and an overlap no longer stops the sweep."""
        kept = {tt: len(self._whole(tt, "train")) for tt in self.cfg.tasks.train}
        overlaps = [o for tt in self.cfg.tasks.train for o in self._overlaps[tt]]
        return Decontamination(overlaps, kept)

    def write_decontamination(self) -> Path:
        """<out>/decontamination.json: the counts the report states (`read_decontamination`)."""
        return write_decontamination(self.out, self.check_leaks())

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
