"""The method protocol, and the `base` method: the untouched model every change is measured
against.

A method owns everything that differs between ways of changing a model: which runs it adds
to the plan and what goes into their config hash, how a model is wrapped for training, what
is saved and loaded back, what it costs, how its weight change ΔW is read, and how the
report names and orders it. Everything else (plan, runner, estimate, analysis, report) asks
the method instead of comparing method names, so a new method is one module and one line in
the registry (`rankscope.methods.METHODS`) plus its config section.

Heavy libraries (torch, transformers, peft) are imported inside the functions that need them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

from rankscope.config import ModelConfig, SweepConfig
from rankscope.identity import BASE_RUN_ID, RunSpec
from rankscope.rundir import replace_dir, write_dir_atomic

DeltaW = tuple[str, Any, Any]
"""(module name, ΔW as a float64 tensor or None for "unchanged", ΔW's singular values when
the method knows them cheaply, else None)."""

_NEVER_CHANGE_RESULTS = ("save_steps", "oom_retry", "logging_steps", "report_to")
_PER_RUN = ("replay_fraction",)  # an axis: each run's own value is in its RunSpec
_HASHED_WHEN_ON = ("packing", "completion_logits")
"""Added after runs were made without them: hashed only when on, so a run made with them
off keeps the hash it had before they existed (off is the computation it made)."""


class Method:
    """What every method provides. Subclasses set the class attributes and override what
    they change; the defaults add nothing to the base model (no artifact, cost or ΔW)."""

    name: ClassVar[str]
    order: ClassVar[int]
    """Position in every plan, table, legend and list (base 0, full 1, lora 2)."""
    prose_name: ClassVar[str | None] = None
    """Name in sentences ('full SFT'); None means the method's name."""
    trains: ClassVar[bool] = True
    """False: the runner evaluates the base model as is (no fit, no artifact)."""
    ranked: ClassVar[bool] = False
    """Has a rank: shown in the label and drawn against the rank axis."""
    baseline: ClassVar[bool] = False
    """The reference every Δ is measured against (the untouched model)."""
    shared: ClassVar[bool] = False
    """One run per sweep (not per train task x seed)."""
    artifact: ClassVar[str | None] = None
    """Subdirectory of the run dir that holds what training produced."""
    flops_per_token: ClassVar[int] = 0
    """Training FLOPs per token per model parameter (6 full, 4 LoRA: no weight gradients
    for frozen weights)."""
    checks_shapes: ClassVar[bool] = False
    """`preflight` needs the model's shapes (a meta-device copy is built only if some
    enabled method asks for it)."""

    @property
    def reference(self) -> bool:
        """Trained but not ranked: a dashed reference line in the rank figures."""
        return self.trains and not self.ranked

    # ---------------------------------------------------------------- plan and identity
    def enabled(self, cfg: SweepConfig) -> bool:
        raise NotImplementedError

    def expand(self, cfg: SweepConfig, task: str | None, seed: int) -> list[RunSpec]:
        """The runs of this method for one train task and seed (task None for shared ones)."""
        raise NotImplementedError

    def hash_fields(self, cfg: SweepConfig) -> dict[str, Any]:
        """The method's part of the config hash: the training settings if it trains."""
        if not self.trains:
            return {}
        train = asdict(cfg.train)
        for k in (*_NEVER_CHANGE_RESULTS, *_PER_RUN):
            train.pop(k)
        for k in _HASHED_WHEN_ON:
            if not train[k]:
                train.pop(k)
        return {"train": train, "train_items": cfg.tasks.max_train_items}

    def preflight(self, cfg: SweepConfig, model: Any) -> None:
        """Refuse settings that do not fit the model (`model` is on the meta device)."""

    # ---------------------------------------------------------------- train, save, load
    def prepare(self, model: Any, run: RunSpec, cfg: SweepConfig) -> Any:
        """The base model, made ready for training (trainable parameters, wrappers)."""
        return model

    def _write(self, model: Any, tok: Any, tmp: Path) -> None:
        raise NotImplementedError

    def save(self, model: Any, tok: Any, run_dir: Path) -> Path | None:
        """Save what training changed to `run_dir/<artifact>`; its path. Written beside and
        swapped in, so a run killed mid-save never leaves half an artifact to resume from."""
        if self.artifact is None:
            return None
        target = Path(run_dir) / self.artifact
        write_dir_atomic(target, lambda tmp: self._write(model, tok, tmp))
        return target

    def adopt(self, saved: Path, tok: Any, run_dir: Path) -> None:
        """Move an artifact the Trainer saved itself (FSDP: gathered by all ranks) into
        place as `run_dir/<artifact>`."""
        if self.artifact is None:
            return
        replace_dir(Path(saved), Path(run_dir) / self.artifact)

    def load(self, base: Any, run_dir: Path, mcfg: ModelConfig) -> Any:
        """The trained model, from the base model and the saved artifact."""
        return base

    # ---------------------------------------------------------------- cost
    def trainable_params(self, model: Any, run: RunSpec, cfg: SweepConfig) -> int:
        """Parameters training updates (`model` may be on the meta device)."""
        return 0

    def held_params(self, total: int, trainable: int) -> int:
        """Parameters the trained model holds, as PEFT and the results store count them."""
        return total

    # ---------------------------------------------------------------- analysis
    def delta_w(
        self, run_dir: Path, base: Any, names: list[str], w0: dict[str, Any]
    ) -> Iterator[DeltaW]:
        """ΔW per analysed module (`w0`: the base weights of `names`, float64)."""
        return iter(())

    # ---------------------------------------------------------------- report
    def arm_tag(self, run: RunSpec) -> str:
        """The run id's middle part, from the run's typed fields: its configuration without
        train task and seed (`lora-r8-a16-lr1e-3`); what successive halving calls an arm."""
        return self.name

    def _name(self, name: str, rank: int | None, variant: str) -> str:
        r = f" r={rank}" if self.ranked else ""
        return name + r + (f" ({variant})" if variant else "")

    def label(self, rank: int | None = None, variant: str = "") -> str:
        """For tables and legends: 'base', 'full', 'lora r=8', 'lora r=8 (rslora)'."""
        return self._name(self.name, rank, variant)

    def prose(self, rank: int | None = None, variant: str = "") -> str:
        """For sentences: 'base', 'full SFT', 'LoRA r=8 (rslora)'."""
        return self._name(self.prose_name or self.name, rank, variant)

    def sort_key(self, rank: int | None = None, variant: str = "") -> tuple[int, str, int]:
        """Methods in registry order, then variant (plain first), then rank."""
        return (self.order, variant, rank or 0)

    def __repr__(self) -> str:
        return f"<method {self.name}>"


class BaseMethod(Method):
    """The untouched base model: one shared run, evaluated as is."""

    name = "base"
    order = 0
    trains = False
    baseline = True
    shared = True

    def enabled(self, cfg: SweepConfig) -> bool:
        return cfg.methods.base

    def expand(self, cfg: SweepConfig, task: str | None, seed: int) -> list[RunSpec]:
        return [RunSpec(BASE_RUN_ID, self.name, None, seed)]


BASE = BaseMethod()
