"""Train one run with `transformers.Trainer`; loss on the completion only; resumable.

The model comes prepared by its method, the data is a `datasets.Dataset` of token ids with
the prompt masked out of the labels; `rankscope.fastloss` packs each micro-batch into one
padding-free row and computes the LM head only where the loss is (`train.packing`,
`train.completion_logits`), the plain Trainer on padded batches when both are off. Every
`train.save_steps` optimizer steps it saves a checkpoint (model or adapter, optimizer,
scheduler, RNG, trainer state) under the work dir, and a later call resumes from the newest
*complete* one. Ctrl-C (see `rankscope.interrupts`) asks for a checkpoint at the next step
and a clean stop.
"""

from __future__ import annotations

import gc
import json
import math
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankscope import tracking
from rankscope.config import SweepConfig
from rankscope.errors import RankscopeError
from rankscope.interrupts import STOP, Interrupted, deferred_interrupts, kill_point
from rankscope.rundir import write_atomic
from rankscope.tasks import Item

if TYPE_CHECKING:
    from rankscope.identity import RunSpec

COMPLETE = "COMPLETE"  # written into a checkpoint dir after the Trainer finished saving it
SETTINGS = "settings.json"  # micro-batch / grad-accum in use (changed by an OOM retry)


class NonFiniteLoss(RankscopeError):
    """The train loss became NaN/inf."""


class OutOfMemory(RankscopeError):
    """Training ran out of memory (after the optional retry)."""


def encode(
    items: list[Item], tok: Any, max_len: int, chat: bool = False
) -> list[dict[str, list[int]]]:
    """prompt+completion ids with labels = -100 on the prompt (and BOS), EOS appended.

    The prompt is rendered and tokenised as evaluation does it (`rankscope.prompting`: the
    optional chat template, the BOS rule), so a model is scored on the input it learned on.
    It is truncated from its left when the pair is too long, so the completion is always
    learned in full.
    """
    from rankscope import prompting

    prompts = [prompting.render_prompt(tok, it.prompt, chat) for it in items]
    rows = []
    for it, p in zip(items, prompting.encode(tok, prompts), strict=True):
        c = tok(" " + it.completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        c = c[:max_len]
        room = max_len - len(c)  # 0 when the completion alone fills the limit: no prompt
        p = (p[len(p) - room :] if room else []) if len(p) + len(c) > max_len else p
        ids = p + c
        rows.append(
            {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * len(p) + c}
        )
    return rows


def fp32_master_weights(model: Any) -> int:
    """Keep every trainable weight in fp32 (the master copy of mixed precision); return how
    many tensors were upcast.

    A model loaded in bf16 (`model.dtype: bfloat16`) and trained as is runs AdamW on bf16
    weights: an update below a weight's bf16 resolution (2^-8 of its size, so most 5e-5
    steps) rounds away, while LoRA's adapters are fp32 and keep theirs, which would bias the
    comparison toward full SFT changing less. With fp32 master weights the forward and
    backward still run in bf16 under `train.precision: bf16` (Trainer's autocast); the frozen
    base weights of a LoRA run stay as loaded.
    """
    import torch

    half = (torch.bfloat16, torch.float16)
    upcast = [p for p in model.parameters() if p.requires_grad and p.dtype in half]
    for p in upcast:
        p.data = p.data.float()
    return len(upcast)


def _precision(cfg: SweepConfig) -> dict[str, bool]:
    import torch

    want = cfg.train.precision
    if want == "auto":
        want = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return {"bf16": want == "bf16", "fp16": want == "fp16"}


def training_args(
    cfg: SweepConfig,
    lr: float,
    seed: int,
    out: Path,
    batch_size: int | None = None,
    grad_accum: int | None = None,
    run_name: str | None = None,
) -> Any:
    """The Trainer's arguments; `run_name` (the run id) names the run in `train.report_to`'s
    trackers (None: each tracker names it as it does by default)."""
    import torch
    from transformers import TrainingArguments

    tracking.require_installed(cfg)  # before the Trainer fails on a missing package, less clearly
    t = cfg.train
    return TrainingArguments(
        output_dir=str(out),
        num_train_epochs=t.epochs,
        per_device_train_batch_size=batch_size or t.batch_size,
        gradient_accumulation_steps=grad_accum or t.grad_accum,
        learning_rate=lr,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio in transformers 5
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim="adamw_torch",
        logging_steps=t.logging_steps,
        save_strategy="steps" if t.save_steps else "no",
        save_steps=t.save_steps or 500,
        save_total_limit=2,  # the newest may be half-written when killed; the one before is whole
        report_to=t.trackers or "none",
        run_name=run_name,
        seed=seed,
        data_seed=seed,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=True,
        remove_unused_columns=False,
        **_precision(cfg),
        **_checkpointing(t.gradient_checkpointing),
    )


def _checkpointing(on: bool) -> dict[str, bool]:
    """transformers >= 5.x renamed gradient_checkpointing (the old name warns, even when off)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    key = (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else "gradient_checkpointing"
    )
    return {key: on}


def _callback(on_progress: Callable[[int, int], bool | None] | None):
    from transformers import TrainerCallback

    class GuardAndCheckpoint(TrainerCallback):
        """Stop at the first non-finite loss; mark whole checkpoints; honour a Ctrl-C."""

        def on_log(self, args, state, control, logs=None, **kw):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise NonFiniteLoss(f"train loss became {loss} at step {state.global_step}")

        def on_step_end(self, args, state, control, **kw):
            kill_point("step")
            if STOP.requested:  # save at this step, then leave the loop cleanly
                control.should_save = True
                control.should_training_stop = True
            if on_progress and on_progress(state.global_step, state.max_steps):
                control.should_save = control.should_training_stop = True  # a rung's end

        def on_save(self, args, state, control, **kw):
            if state.is_world_process_zero:
                ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                (ckpt / COMPLETE).write_text(str(state.global_step))
            kill_point("checkpoint")

    return GuardAndCheckpoint()


def last_checkpoint(work_dir: Path) -> Path | None:
    """The newest complete checkpoint; incomplete ones (killed mid-save) are deleted."""
    if not work_dir.is_dir():
        return None
    ckpts = sorted(
        (p for p in work_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    for p in [p for p in ckpts if not (p / COMPLETE).exists()]:
        shutil.rmtree(p, ignore_errors=True)
    whole = [p for p in ckpts if (p / COMPLETE).exists()]
    return whole[-1] if whole else None


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _loss_log(history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The loss curve from the Trainer's log history (restored with a checkpoint)."""
    return [
        {
            "step": int(h["step"]),
            "loss": float(h["loss"]),
            "lr": float(h.get("learning_rate", 0.0)),
            "epoch": float(h.get("epoch", 0.0)),
        }
        for h in history
        if "loss" in h
    ]


def _trainer(
    model: Any, tok: Any, rows: list, args: Any, on_progress: Any, cfg: SweepConfig
) -> Any:
    """The Trainer of one run: padding-free batches and completion-only logits as
    `train.packing` / `train.completion_logits` ask (`rankscope.fastloss`), else the plain
    Trainer on padded batches."""
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer
    from transformers.trainer_callback import PrinterCallback

    t = cfg.train
    common = {
        "model": model,
        "args": args,
        "train_dataset": Dataset.from_list(rows),
        "callbacks": [_callback(on_progress)],
    }
    if t.packing or t.completion_logits:
        from rankscope import fastloss

        collate = fastloss.collator(model, tok, t.packing)
        packed = not isinstance(collate, DataCollatorForSeq2Seq)
        model.train()
        trainer = fastloss.FastTrainer(
            **common,
            data_collator=collate,
            packed=packed,
            completion_logits=t.completion_logits,
        )
    else:
        model.train()
        collate = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
        trainer = Trainer(**common, data_collator=collate)
    trainer.remove_callback(PrinterCallback)  # our own progress bars report instead
    return trainer


def train(
    model: Any,
    tok: Any,
    items: list[Item],
    cfg: SweepConfig,
    lr: float,
    seed: int,
    work_dir: Path,
    on_progress: Callable[[int, int], None] | None = None,
    batch_size: int | None = None,
    grad_accum: int | None = None,
    run: RunSpec | None = None,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    """Fine-tune `model` in place, resuming from work_dir's last checkpoint; return the record.

    `train.report_to`'s trackers name the run by `run`'s id and get `run` and the config as
    params; TensorBoard writes to `log_dir` (default work_dir/tb). Raises Interrupted when a
    Ctrl-C stopped it (after saving a checkpoint).
    """
    import torch

    rows = encode(items, tok, cfg.train.max_seq_len, cfg.data.chat_template)
    fp32_master_weights(model)
    name = run.run_id if run else None
    args = training_args(cfg, lr, seed, work_dir, batch_size, grad_accum, run_name=name)
    trainer = _trainer(model, tok, rows, args, on_progress, cfg)
    tracking.attach(trainer, cfg, run, log_dir or work_dir / tracking.TB_DIR)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    resume = last_checkpoint(work_dir)
    t0 = time.perf_counter()
    with deferred_interrupts(), tracking.session(trainer, cfg):
        out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - t0
    if STOP.requested and trainer.state.global_step < trainer.state.max_steps:
        raise Interrupted(f"interrupted at train step {trainer.state.global_step}")
    fsdp_dir = None
    if getattr(trainer, "is_fsdp_enabled", False):
        # FSDP shards the weights across processes: every rank must take part in gathering
        # them, so the trained model is saved here, by all ranks, while the group is up.
        fsdp_dir = work_dir / "final"
        trainer.save_model(str(fsdp_dir))
    model.eval()
    log = _loss_log(trainer.state.log_history)
    final = log[-1]["loss"] if log else out.training_loss  # fewer steps than logging_steps
    if not math.isfinite(final):
        raise NonFiniteLoss(f"training produced no finite loss (final loss {final})")
    n_tokens = sum(len(r["input_ids"]) for r in rows) * cfg.train.epochs
    return {
        "train_seconds": seconds,
        "tokens_per_second": n_tokens / max(seconds, 1e-9),
        "peak_memory_mb": peak_memory_mb(),
        "final_train_loss": final,
        "batch_size": args.per_device_train_batch_size,
        "grad_accum": args.gradient_accumulation_steps,
        "resumed_from_step": int(resume.name.split("-")[-1]) if resume else 0,
        "log": log,
        "fsdp_dir": str(fsdp_dir) if fsdp_dir else None,
    }


# ------------------------------------------------------------------ out of memory
def is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "out of memory" in str(e).lower()
    )


def oom_advice(run_id: str, batch_size: int, grad_accum: int, retried: bool) -> str:
    tried = " (a retry with half the micro-batch ran out of memory too)" if retried else ""
    return (
        f"out of memory in {run_id} at train.batch_size={batch_size}, "
        f"train.grad_accum={grad_accum}{tried}: lower train.batch_size and raise "
        "train.grad_accum by the same factor (same effective batch), set "
        "train.gradient_checkpointing=true, or shorten train.max_seq_len"
    )


def _settings(work_dir: Path, cfg: SweepConfig) -> tuple[int, int, bool]:
    """(micro-batch, grad-accum, already retried) for this run, from an earlier OOM retry."""
    path = work_dir / SETTINGS
    if path.is_file():
        s = json.loads(path.read_text())
        return s["batch_size"], s["grad_accum"], True
    return cfg.train.batch_size, cfg.train.grad_accum, False


def fit(
    prepare: Callable[[], Any],
    tok: Any,
    items: list[Item],
    cfg: SweepConfig,
    run_id: str,
    lr: float,
    seed: int,
    work_dir: Path,
    on_progress: Callable[[int, int], None] | None = None,
    run: RunSpec | None = None,
    log_dir: Path | None = None,
) -> tuple[Any, dict[str, Any]]:
    """`train` a freshly prepared model; on out-of-memory retry once (train.oom_retry) with
    half the micro-batch and twice the grad-accum, so the effective batch stays the same.
    `run` and `log_dir` go to `train` (experiment tracking)."""
    bs, accum, retried = _settings(work_dir, cfg)
    while True:
        model = prepare()
        try:
            rec = train(
                model, tok, items, cfg, lr, seed, work_dir, on_progress, bs, accum, run, log_dir
            )
            return model, rec
        except Exception as e:
            if not is_oom(e):
                raise
            del model
            _free_memory()
            if retried or not cfg.train.oom_retry or bs % 2:
                raise OutOfMemory(oom_advice(run_id, bs, accum, retried)) from None
            bs, accum, retried = bs // 2, accum * 2, True
            shutil.rmtree(work_dir, ignore_errors=True)  # checkpoints of the old batch layout
            work_dir.mkdir(parents=True)
            write_atomic(work_dir / SETTINGS, json.dumps({"batch_size": bs, "grad_accum": accum}))


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
