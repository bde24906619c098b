"""Experiment tracking (`train.report_to`): TensorBoard, MLflow, wandb.

The Trainer's own integration callbacks log the train loss; this module points them at the
run (`training_args` passes the run id as `run_name`; TensorBoard writes to the run dir's
tb/, which outlives the checkpoints) and logs the resolved sweep config as params: MLflow
`log_params`, wandb `config.update`, TensorBoard a `config` text (a markdown table) and the
HParams dashboard's session info.

The params are the sweep config flattened to dotted keys (`train.epochs`,
`methods.lora.ranks`; the top-level keys as `sweep.name`, `sweep.seeds`, ...) and the run's
identity as `run.*` (`run.method`, `run.rank`, `run.lr`, ...). All are prefixed, so none
collides with a TrainingArguments name the MLflow callback logs as is (`seed`,
`output_dir`): MLflow refuses a param logged twice with two values.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from rankscope.config import SweepConfig
from rankscope.errors import ConfigError

TB_DIR = "tb"
"""TensorBoard event files, in the run dir."""


def require_installed(cfg: SweepConfig) -> None:
    """Refuse a tracker whose package is missing before any training starts."""
    missing = [t for t in cfg.train.trackers if find_spec(t) is None]
    if missing:
        raise ConfigError(
            f"train.report_to: {', '.join(missing)} is not installed; pip install "
            "'rankscope[track]' (tensorboard, mlflow-skinny) or wandb, or set "
            "train.report_to=none"
        )


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def params(cfg: SweepConfig, run: Any = None) -> dict[str, Any]:
    """`run.*` (the RunSpec's fields, when given), then the config as dotted keys."""
    out = {f"run.{k}": v for k, v in dataclasses.asdict(run).items()} if run else {}
    for k, v in _flatten(cfg.to_dict()).items():
        out[k if "." in k else f"sweep.{k}"] = v
    return out


def text(value: Any) -> str:
    """A param as trackers show it: strings as they are, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _callback(trainer: Any, cls: type) -> Any:
    return next((c for c in trainer.callback_handler.callbacks if isinstance(c, cls)), None)


def attach(trainer: Any, cfg: SweepConfig, run: Any, log_dir: Path) -> None:
    """Send TensorBoard's events to `log_dir` and log the params once each tracker's run is
    open (the integration callbacks open it in their on_train_begin and come before ours)."""
    if not cfg.train.trackers:
        return
    from transformers.integrations import TensorBoardCallback

    tb = _callback(trainer, TensorBoardCallback)
    if tb is not None:  # read at on_train_begin; else output_dir/runs/<date>_<host>
        tb.logging_dir = str(log_dir)
    trainer.add_callback(_log_params(params(cfg, run), cfg.train.trackers, tb))


def _log_params(values: dict[str, Any], trackers: list[str], tb: Any) -> Any:
    from transformers import TrainerCallback

    class LogParams(TrainerCallback):
        """Log the params to every active tracker when training begins (again on resume: a
        resumed run is a new MLflow run of the same name, the same TensorBoard dir)."""

        def on_train_begin(self, args, state, control, **kw):
            if not state.is_world_process_zero:
                return
            if "mlflow" in trackers:
                _to_mlflow(values)
            if tb is not None and tb.tb_writer is not None:
                _to_tensorboard(tb.tb_writer, values)
            if "wandb" in trackers:
                _to_wandb(values)

    return LogParams()


def _to_mlflow(values: dict[str, Any]) -> None:
    """Into the run the MLflow callback started, in batches of MLflow's size limit."""
    import mlflow
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

    if mlflow.active_run() is None:
        return
    cut = MAX_PARAM_VAL_LENGTH
    items = [
        (k, t if len(t := text(v)) <= cut else t[: cut - 3] + "...") for k, v in values.items()
    ]
    for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
        mlflow.log_params(dict(items[i : i + MAX_PARAMS_TAGS_PER_BATCH]))


def _to_tensorboard(writer: Any, values: dict[str, Any]) -> None:
    """A `config` text (markdown table) and the HParams session info: numbers and strings as
    they are, the rest as JSON, None left out (TensorBoard has no null)."""
    from torch.utils.tensorboard.summary import hparams

    rows = "".join(f"| {k} | {text(v).replace('|', '&#124;')} |\n" for k, v in values.items())
    writer.add_text("config", "| param | value |\n|---|---|\n" + rows)
    plain = (int, float, str)
    hp = {
        k: v if isinstance(v, plain) and not isinstance(v, bool) else text(v)
        for k, v in values.items()
        if v is not None
    }
    _, session_start, _ = hparams(hp, {})
    writer.file_writer.add_summary(session_start)
    writer.flush()


def _to_wandb(values: dict[str, Any]) -> None:
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.config.update(values, allow_val_change=True)


@contextmanager
def session(trainer: Any, cfg: SweepConfig) -> Iterator[None]:
    """Around `trainer.train`: end each tracker's run when it is over, failed ones too (the
    Trainer's callbacks end theirs only on success, and wandb's never), so the next run in
    this process opens its own run instead of logging into this one."""
    ok = False
    try:
        yield
        ok = True
    finally:
        if cfg.train.trackers:
            _end(trainer, cfg.train.trackers, ok)


def _end(trainer: Any, trackers: list[str], ok: bool) -> None:
    from transformers.integrations import TensorBoardCallback

    tb = _callback(trainer, TensorBoardCallback)
    if tb is not None and tb.tb_writer is not None:
        tb.tb_writer.close()
        tb.tb_writer = None
    if "mlflow" in trackers and not ok:
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.end_run(status="FAILED")
    if "wandb" in trackers:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=0 if ok else 1)
