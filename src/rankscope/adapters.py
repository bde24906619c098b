"""Many adapters, one base model: evaluate the LoRA runs of a sweep by swapping adapters.

`load_for_eval` copies the base model and wraps the copy with one run's adapter; for k LoRA
runs that is k copies (and, one process per run, k loads from disk). `AdapterBank` loads the
base model once, wraps it in one `PeftModel`, and for each run loads its adapter into that
model under its own name (`load_adapter`), makes it the active one (`set_adapter`), and
deletes the adapters it no longer needs (`delete_adapter`; at most `keep` stay loaded), so
memory stays at one base model plus `keep` adapters. The forward pass of the active adapter
is the one `load_for_eval` builds (base layer + s·B·A on the same untouched weights), so the
predictions are the same, bit for bit.

What it does not apply to (`AdapterBank.refusal` says why; `AdapterBank.load` falls back to
`load_for_eval`):

- full SFT (no adapter: its weights replace the base model's) and the base method;
- DoRA (its magnitude vectors rescale the base weight per adapter) and PiSSA runs (PiSSA
  rewrites the base weights to a residual when an unconverted adapter loads; a converted one
  is plain LoRA, but the variant is refused either way: one simple rule);
- any saved adapter whose config would change the base model at load: an init other than
  the plain or gaussian one, trained biases, `modules_to_save`, layer replication.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rankscope.config import ModelConfig
from rankscope.config.sections import variant_options
from rankscope.identity import RunSpec
from rankscope.methods import LORA, load_base, load_for_eval

_PLAIN_INITS = (True, False, "gaussian")
"""Inits that only set the adapter's starting factors (which the saved ones overwrite)."""


def adapter_dir(run_dir: Path) -> Path:
    """Where a LoRA run keeps its adapter (the layout `LoraMethod.load` reads)."""
    return Path(run_dir) / str(LORA.artifact)


def refusal(run: RunSpec, run_dir: Path) -> str | None:
    """Why the run's model cannot be an adapter on a shared base model, or None if it can."""
    if run.method != LORA.name:
        return f"{run.run_id}: method {run.method!r} has no adapter to swap (LoRA only)"
    _, dora, init = variant_options(run.variant or "lora")
    if dora or init == "pissa":
        what = "DoRA rescales the base weights" if dora else "PiSSA changes the base weights"
        return f"{run.run_id}: variant {run.variant!r}: {what}"
    path = adapter_dir(run_dir) / "adapter_config.json"
    if not path.is_file():
        return f"{run.run_id}: no adapter at {path.parent}"
    return _config_refusal(run.run_id, json.loads(path.read_text()))


def _config_refusal(run_id: str, conf: dict[str, Any]) -> str | None:
    """Why a saved adapter config would touch the base model at load, or None."""
    checks = [
        (conf.get("peft_type") == "LORA", f"peft_type {conf.get('peft_type')!r} is not LORA"),
        (not conf.get("use_dora"), "use_dora"),
        (conf.get("init_lora_weights", True) in _PLAIN_INITS, "a weight-changing init"),
        (conf.get("bias", "none") == "none", f"bias {conf.get('bias')!r}"),
        (not conf.get("modules_to_save"), "modules_to_save"),
        (not conf.get("layer_replication"), "layer_replication"),
        (not conf.get("trainable_token_indices"), "trainable_token_indices"),
    ]
    bad = [why for ok, why in checks if not ok]
    return f"{run_id}: adapter config has {', '.join(bad)}" if bad else None


class AdapterBank:
    """One base model, LoRA adapters swapped in and out of it (see the module docstring).

    Use as a context manager, or call `close()`; `activate` returns the model with the run's
    adapter active (or None where the bank does not apply), `load` falls back to
    `load_for_eval`. The returned model is the bank's: it changes on the next `activate`.
    """

    def __init__(self, mcfg: ModelConfig, keep: int = 1) -> None:
        self.mcfg = mcfg
        self.keep = max(1, keep)
        self.model: Any = None  # the PeftModel, built on the first adapter
        self.tok: Any = None
        self._names: dict[str, str] = {}  # adapter dir -> adapter name, oldest first
        self._count = 0
        self.loads = 0  # adapters read from disk (a swap back to a kept one reads none)

    def __enter__(self) -> AdapterBank:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the model and every adapter."""
        self.model, self.tok, self._names = None, None, {}

    @property
    def loaded(self) -> list[str]:
        """The adapter dirs now loaded, oldest first."""
        return list(self._names)

    def activate(self, run: RunSpec, run_dir: Path) -> tuple[Any, Any] | None:
        """(model, tokenizer) with the run's adapter active, in eval mode; None where the
        bank does not apply (`refusal`)."""
        if refusal(run, run_dir) is not None:
            return None
        path = str(adapter_dir(run_dir).resolve())
        name = self._names.pop(path, None)
        if name is None:
            name = self._load(path)
        self._names[path] = name  # most recently used last
        self.model.set_adapter(name, inference_mode=True)  # frozen, as load_for_eval's
        self._evict()
        self.model.eval()
        return self.model, self.tok

    def load(self, run: RunSpec, run_dir: Path) -> tuple[Any, Any]:
        """The run's model for evaluation: from the bank where it applies, else as
        `load_for_eval` builds it."""
        got = self.activate(run, run_dir)
        return got if got is not None else load_for_eval(run, run_dir, self.mcfg)

    def _load(self, path: str) -> str:
        """Read one adapter into the shared model; its (ModuleDict-safe) name."""
        from peft import PeftModel

        self._count += 1
        name = f"run{self._count}"  # run ids hold '.', which a module name may not
        if self.model is None:
            base, self.tok, _ = load_base(self.mcfg)
            self.model = PeftModel.from_pretrained(base, path, adapter_name=name)
        else:
            self.model.load_adapter(path, adapter_name=name)
        self.loads += 1
        return name

    def _evict(self) -> None:
        """Delete the least recently used adapters beyond `keep` (never the active one, which
        is the most recent)."""
        while len(self._names) > self.keep:
            oldest = next(iter(self._names))
            self.model.delete_adapter(self._names.pop(oldest))
