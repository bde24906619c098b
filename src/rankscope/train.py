"""Train one run with `transformers.Trainer`; loss on the completion only.

The Trainer is used as is (no subclass): the model comes prepared by its method, the data
is a `datasets.Dataset` of token ids with the prompt masked out of the labels.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rankscope.config import SweepConfig
from rankscope.errors import RankscopeError
from rankscope.tasks import Item


class NonFiniteLoss(RankscopeError):
    """The train loss became NaN/inf."""


def encode(items: list[Item], tok: Any, max_len: int) -> list[dict[str, list[int]]]:
    """prompt+completion ids with labels = -100 on the prompt (and BOS), EOS appended.

    The prompt is truncated from its left when the pair is too long, so the completion is
    always learned in full.
    """
    rows = []
    for it in items:
        p = tok(it.prompt)["input_ids"]
        c = tok(" " + it.completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        c = c[:max_len]
        p = p[-(max_len - len(c)) :] if len(p) + len(c) > max_len else p
        ids = p + c
        rows.append(
            {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * len(p) + c}
        )
    return rows


def _precision(cfg: SweepConfig) -> dict[str, bool]:
    import torch

    want = cfg.train.precision
    if want == "auto":
        want = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return {"bf16": want == "bf16", "fp16": want == "fp16"}


def training_args(cfg: SweepConfig, lr: float, seed: int, out: Path) -> Any:
    import torch
    from transformers import TrainingArguments

    t = cfg.train
    return TrainingArguments(
        output_dir=str(out),
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=lr,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio in transformers 5
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim="adamw_torch",
        logging_steps=t.logging_steps,
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=True,
        remove_unused_columns=False,
        **_precision(cfg),
    )


def _callback(log: list[dict[str, float]], on_progress: Callable[[int, int], None] | None):
    from transformers import TrainerCallback

    class LogAndGuard(TrainerCallback):
        """Collect the loss curve, report progress, stop at the first non-finite loss."""

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                loss = float(logs["loss"])
                log.append(
                    {
                        "step": state.global_step,
                        "loss": loss,
                        "lr": float(logs.get("learning_rate", 0.0)),
                        "epoch": float(logs.get("epoch", 0.0)),
                    }
                )
                if not math.isfinite(loss):
                    raise NonFiniteLoss(f"train loss became {loss} at step {state.global_step}")

        def on_step_end(self, args, state, control, **kw):
            if on_progress:
                on_progress(state.global_step, state.max_steps)

    return LogAndGuard()


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def train(
    model: Any,
    tok: Any,
    items: list[Item],
    cfg: SweepConfig,
    lr: float,
    seed: int,
    work_dir: Path,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune `model` in place; return the train record for the store."""
    import torch
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer
    from transformers.trainer_callback import PrinterCallback

    rows = encode(items, tok, cfg.train.max_seq_len)
    dataset = Dataset.from_list(rows)
    collator = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    log: list[dict[str, float]] = []
    model.train()
    trainer = Trainer(
        model=model,
        args=training_args(cfg, lr, seed, work_dir),
        train_dataset=dataset,
        data_collator=collator,
        callbacks=[_callback(log, on_progress)],
    )
    trainer.remove_callback(PrinterCallback)  # our own progress bars report instead
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    model.eval()
    n_tokens = sum(len(r["input_ids"]) for r in rows) * cfg.train.epochs
    if not log or not math.isfinite(log[-1]["loss"]):
        raise NonFiniteLoss("training produced no finite loss")
    return {
        "train_seconds": seconds,
        "tokens_per_second": n_tokens / max(seconds, 1e-9),
        "peak_memory_mb": peak_memory_mb(),
        "final_train_loss": log[-1]["loss"],
        "log": log,
    }
