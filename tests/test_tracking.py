"""Experiment tracking (`train.report_to`, issue 17): the loss curve, the run id as run name
and the resolved config as params reach TensorBoard and MLflow, offline (event files in the
run dir, an MLflow file store); the default writes neither; bad values are refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sweep_configs import one_lora_run

from rankscope.config import load_config
from rankscope.errors import ConfigError
from rankscope.methods import METHODS, load_base
from rankscope.plan import config_hash, make_plan
from rankscope.sweep import sweep_for
from rankscope.train import train, training_args

RUN = "toy-arith__lora-r4-a8-lr3e-3__s0"
EXPERIMENT = "rankscope-tracking-test"


def _sets(out: Path, cache_dir: Path, *extra: str) -> list[str]:
    steps = ("train.batch_size=4", "train.grad_accum=1", "train.logging_steps=1")
    return one_lora_run("tracked", out, cache_dir, *steps, *extra)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, cache_dir, small_model_dir):
    """One sweep of one LoRA run through the runner, to TensorBoard and an MLflow file store:
    (its run dir, the store's tracking URI)."""
    from rankscope.pipeline import run_sweep

    tmp = tmp_path_factory.mktemp("tracked")
    uri = f"file://{tmp / 'mlruns'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3.x: the file store is opt-in
        cfg = load_config(
            None, _sets(tmp / "out", cache_dir, "train.report_to=[tensorboard, mlflow]")
        )
        assert run_sweep(cfg, report=False).done == [RUN]
    return tmp / "out" / "runs" / RUN, uri


def _train_log_losses(run_dir: Path) -> dict[int, float]:
    """step -> training loss, as the run itself logged it (train_log.jsonl)."""
    rows = [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_tensorboard_events_in_the_run_dir_hold_the_loss_and_the_config(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir, _ = tracked
    assert not (run_dir / "trainer").exists()  # the checkpoints are gone, the events stay
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    ea = EventAccumulator(str(run_dir / "tb"), size_guidance={"tensors": 0}).Reload()
    losses = {e.step: e.value for e in ea.Scalars("train/loss")}
    logged = _train_log_losses(run_dir)
    assert sorted(logged) == [1, 2, 3, 4]  # 16 items / batch 4, one epoch
    assert losses == pytest.approx(logged, rel=1e-5)  # the same curve (float32 in the events)

    (config,) = ea.Tensors("config/text_summary")
    table = config.tensor_proto.string_val[0].decode()
    for row in ("| run.run_id | " + RUN + " |", "| run.rank | 4 |", "| train.epochs | 1.0 |"):
        assert row in table, row
    assert "| methods.lora.ranks | [4] |" in table and "| sweep.name | tracked |" in table

    content = ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hp = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hp["run.rank"].number_value == 4 and hp["train.epochs"].number_value == 1.0
    assert hp["run.method"].string_value == "lora" and hp["run.run_id"].string_value == RUN
    assert hp["methods.lora.ranks"].string_value == "[4]"


def test_mlflow_run_is_named_by_the_run_id_with_config_params_and_loss(tracked):
    from mlflow.tracking import MlflowClient

    _, uri = tracked
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == RUN and run.info.status == "FINISHED"
    p = run.data.params
    assert p["train.epochs"] == "1.0" and p["methods.lora.ranks"] == "[4]"
    assert p["run.rank"] == "4" and p["run.lr"] == "0.003" and p["run.method"] == "lora"
    assert (
        p["tasks.train"] == '["toy-arith"]' and p["train.report_to"] == '["tensorboard", "mlflow"]'
    )
    assert p["run_name"] == RUN  # the Trainer's own arguments are there too
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    run_dir, _ = tracked
    logged = _train_log_losses(run_dir)
    assert {m.step: m.value for m in history} == pytest.approx(logged, rel=1e-5)


def test_the_default_reports_to_neither(tmp_path, cache_dir, small_model_dir, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file://{tmp_path / 'mlruns'}")
    cfg = load_config(None, _sets(tmp_path / "out", cache_dir, "tasks.max_train_items=8"))
    assert cfg.train.report_to == "none" and cfg.train.trackers == []
    assert training_args(cfg, 1e-3, 0, tmp_path / "w").report_to in ([], "none", ["none"])
    (run,) = make_plan(cfg)
    items = sweep_for(cfg).items(run.train_task, "train")
    base, tok, _ = load_base(cfg.model)
    model = METHODS["lora"].prepare(base, run, cfg)
    rec = train(model, tok, items, cfg, run.lr, run.seed, tmp_path / "w", run=run)
    assert rec["log"]  # it trained
    found = [p for p in tmp_path.rglob("*") if "tfevents" in p.name or p.name == "mlruns"]
    assert not found and not (tmp_path / "w" / "tb").exists()


class Crash(Exception):
    """Stands for any failure inside training."""


def _crash(done: int, total: int) -> None:
    raise Crash(done)


def test_a_failed_run_ends_its_mlflow_run(tmp_path, cache_dir, small_model_dir, monkeypatch):
    """Else the next run of this worker process would log into it (the Trainer's callback
    only ends the MLflow run when training ends normally)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"file://{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)  # mlflow keeps the last one set
    sets = ("tasks.max_train_items=8", "train.report_to=mlflow")
    cfg = load_config(None, _sets(tmp_path / "out", cache_dir, *sets))
    (run,) = make_plan(cfg)
    items = sweep_for(cfg).items(run.train_task, "train")
    base, tok, _ = load_base(cfg.model)
    model = METHODS["lora"].prepare(base, run, cfg)
    with pytest.raises(Crash):
        train(model, tok, items, cfg, run.lr, run.seed, tmp_path / "w", _crash, run=run)
    assert mlflow.active_run() is None
    client = MlflowClient(tracking_uri=uri)
    (got,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert got.info.run_name == RUN and got.info.status == "FAILED"


def test_report_to_is_checked_and_never_changes_a_run_hash(tmp_path, cache_dir):
    sets = _sets(tmp_path, cache_dir)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntrain:\n  report_to: [tensorboard, comet]\n")
    refused = r"train\.report_to: 'comet' is not one of tensorboard, mlflow, wandb"
    with pytest.raises(ConfigError, match=f"^{re.escape(str(bad))}: {refused}$"):
        load_config(bad)
    with pytest.raises(ConfigError, match=refused):
        load_config(None, [*sets, "train.report_to=[comet]"])
    with pytest.raises(ConfigError, match=r"train\.report_to: 'tensorbord'.*'tensorboard'"):
        load_config(None, [*sets, "train.report_to=tensorbord"])  # one name, misspelt
    one = load_config(None, [*sets, "train.report_to=mlflow"])
    assert one.train.report_to == ["mlflow"] and one.train.trackers == ["mlflow"]
    both = load_config(None, [*sets, "train.report_to=[tensorboard, mlflow]"])
    plain = load_config(None, sets)
    (a,), (b,) = make_plan(both), make_plan(plain)
    assert config_hash(a, both) == config_hash(b, plain)


def test_a_tracker_that_is_not_installed_is_refused_before_training(
    tmp_path, cache_dir, monkeypatch
):
    import rankscope.tracking as tracking

    monkeypatch.setattr(tracking, "find_spec", lambda name: None if name == "mlflow" else 1)
    cfg = load_config(None, _sets(tmp_path, cache_dir, "train.report_to=[tensorboard, mlflow]"))
    with pytest.raises(ConfigError, match=r"train\.report_to: mlflow is not installed.*track"):
        training_args(cfg, 1e-3, 0, tmp_path / "w")


def test_params_never_collide_with_the_trainers_own(tmp_path, cache_dir):
    """MLflow refuses a param logged twice with two values; the Trainer's MLflow callback logs
    every TrainingArguments field under its plain name."""
    import dataclasses

    from transformers import TrainingArguments

    from rankscope.tracking import params

    cfg = load_config(None, _sets(tmp_path, cache_dir))
    (run,) = make_plan(cfg)
    keys = params(cfg, run)
    assert "run.rank" in keys and "train.epochs" in keys and "sweep.seeds" in keys
    assert not keys.keys() & {f.name for f in dataclasses.fields(TrainingArguments)}
