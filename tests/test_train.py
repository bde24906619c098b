"""Training on the small toy world: resume from a checkpoint, out-of-memory retry, options."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from sweep_configs import small_sweep

from rankscope.methods import METHODS, load_base
from rankscope.plan import make_plan
from rankscope.sweep import sweep_for
from rankscope.train import OutOfMemory, fit, train, training_args


def _setup(tmp_path: Path, cache_dir: Path, *extra: str):
    cfg = small_sweep(
        tmp_path / "out",
        cache_dir,
        "tasks.max_train_items=32",
        "methods.base=false",
        "methods.full.enabled=false",
        "methods.lora.ranks=[4]",
        "methods.lora.dropout=0.2",  # dropout on: resume must restore the RNG
        "train.epochs=2",
        "train.batch_size=4",
        "train.grad_accum=1",
        "train.logging_steps=1",
        "train.save_steps=3",
        "train.precision=fp32",
        *extra,
    )
    (run,) = make_plan(cfg)
    items = sweep_for(cfg).items(run.train_task, "train")
    tok = load_base(cfg.model)[1]

    def prepare(seed: int = run.seed):
        from transformers import set_seed

        set_seed(seed)
        return METHODS["lora"].prepare(load_base(cfg.model)[0], run, cfg)

    return cfg, run, items, tok, prepare


class Crash(Exception):
    """Stands for a kill: training ends abruptly, only checkpoints on disk remain."""


def _crash_at(step: int):
    def on_progress(done: int, total: int) -> None:
        if done == step:
            raise Crash(step)

    return on_progress


def _adapter(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" in k}


def _interrupted_then_resumed(cfg, run, items, tok, prepare, work: Path):
    with pytest.raises(Crash):
        train(prepare(), tok, items, cfg, run.lr, run.seed, work, _crash_at(7))
    assert sorted(p.name for p in work.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    torch.manual_seed(12345)  # a fresh process: other global RNG state, other LoRA init
    model = prepare(seed=99)
    return model, train(model, tok, items, cfg, run.lr, run.seed, work)


def test_resume_reproduces_uninterrupted_training(tmp_path, cache_dir, small_model_dir):
    cfg, run, items, tok, prepare = _setup(tmp_path, cache_dir)
    straight = prepare()
    ref = train(straight, tok, items, cfg, run.lr, run.seed, tmp_path / "a")
    model, rec = _interrupted_then_resumed(cfg, run, items, tok, prepare, tmp_path / "b")
    assert rec["resumed_from_step"] == 6 and ref["resumed_from_step"] == 0
    # the loss curve (restored log history + the resumed steps) and the weights match
    assert [r["step"] for r in rec["log"]] == [r["step"] for r in ref["log"]] == list(range(1, 17))
    for a, b in zip(rec["log"], ref["log"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7)
    ref_w, got_w = _adapter(straight), _adapter(model)
    assert ref_w.keys() == got_w.keys() and ref_w
    for k in ref_w:
        torch.testing.assert_close(got_w[k], ref_w[k], rtol=1e-6, atol=1e-7)


def test_without_rng_restore_the_resumed_run_differs(
    tmp_path, cache_dir, small_model_dir, monkeypatch
):
    """The check above has teeth: skipping the RNG restore changes the dropout masks."""
    from transformers import Trainer

    cfg, run, items, tok, prepare = _setup(tmp_path, cache_dir)
    ref = train(prepare(), tok, items, cfg, run.lr, run.seed, tmp_path / "a")
    monkeypatch.setattr(Trainer, "_load_rng_state", lambda self, ckpt: None)
    _, rec = _interrupted_then_resumed(cfg, run, items, tok, prepare, tmp_path / "b")
    assert rec["log"][-1]["loss"] != pytest.approx(ref["log"][-1]["loss"], rel=1e-6)


def _oom_on_first_call(monkeypatch, exc: BaseException) -> list[tuple[int, int]]:
    from transformers import Trainer

    calls: list[tuple[int, int]] = []
    real = Trainer.train

    def flaky(self, *a, **k):
        calls.append((self.args.per_device_train_batch_size, self.args.gradient_accumulation_steps))
        if len(calls) == 1:
            raise exc
        return real(self, *a, **k)

    monkeypatch.setattr(Trainer, "train", flaky)
    return calls


def test_oom_retries_with_half_micro_batch_same_effective_batch(
    tmp_path, cache_dir, small_model_dir, monkeypatch
):
    cfg, run, items, tok, prepare = _setup(tmp_path, cache_dir, "train.epochs=1")
    calls = _oom_on_first_call(monkeypatch, torch.OutOfMemoryError("CUDA out of memory."))
    model, rec = fit(prepare, tok, items, cfg, run.run_id, run.lr, run.seed, tmp_path / "w")
    assert calls == [(4, 1), (2, 2)]  # the retry really ran with the changed settings
    assert (rec["batch_size"], rec["grad_accum"]) == (2, 2)
    assert rec["log"][-1]["step"] == len(items) // 4  # same number of optimizer steps
    assert math.isfinite(rec["final_train_loss"])


@pytest.mark.parametrize(
    "exc", [torch.OutOfMemoryError("CUDA out of memory."), RuntimeError("CPU: out of memory")]
)
def test_oom_without_retry_names_the_run_and_what_to_change(
    tmp_path, cache_dir, small_model_dir, monkeypatch, exc
):
    cfg, run, items, tok, prepare = _setup(tmp_path, cache_dir, "train.oom_retry=false")
    calls = _oom_on_first_call(monkeypatch, exc)
    with pytest.raises(OutOfMemory) as err:
        fit(prepare, tok, items, cfg, run.run_id, run.lr, run.seed, tmp_path / "w")
    msg = str(err.value)
    assert calls == [(4, 1)]
    for needle in (run.run_id, "train.batch_size=4", "train.grad_accum", "gradient_checkpointing"):
        assert needle in msg


def test_gradient_checkpointing_is_passed_and_lora_still_learns(
    tmp_path, cache_dir, small_model_dir
):
    cfg, run, items, tok, prepare = _setup(
        tmp_path, cache_dir, "train.gradient_checkpointing=true", "train.epochs=1"
    )
    assert training_args(cfg, 1e-3, 0, tmp_path).gradient_checkpointing
    model = prepare()
    before = _adapter(model)
    rec = train(model, tok, items, cfg, run.lr, run.seed, tmp_path / "w")
    after = _adapter(model)
    moved = [k for k in before if "lora_B" in k and not torch.equal(before[k], after[k])]
    assert moved and math.isfinite(rec["final_train_loss"])


def test_training_prompts_use_the_chat_template_as_evaluation_does(
    tmp_path, cache_dir, small_model_dir
):
    import copy

    from rankscope.errors import ConfigError
    from rankscope.prompting import encode as prompt_ids
    from rankscope.prompting import render_prompt
    from rankscope.train import encode

    cfg, run, items, tok, prepare = _setup(tmp_path, cache_dir)
    with pytest.raises(ConfigError, match="data.chat_template"):  # the toy tokenizer has none
        encode(items[:2], tok, 512, chat=True)
    chat_tok = copy.deepcopy(tok)
    chat_tok.chat_template = "{% for m in messages %}user: {{ m['content'] }} {% endfor %}bot:"
    rows = encode(items[:4], chat_tok, 512, chat=True)
    for it, row in zip(items[:4], rows, strict=True):
        (p,) = prompt_ids(chat_tok, [render_prompt(chat_tok, it.prompt, True)])
        assert row["input_ids"][: len(p)] == p and row["labels"][: len(p)] == [-100] * len(p)
        assert row["input_ids"] != encode([it], tok, 512)[0]["input_ids"]  # it did change


def test_truncation_keeps_every_sequence_within_max_seq_len(small_model_dir):
    """Long prompts are cut from the left so the completion is learned whole; a completion
    that alone fills the limit leaves no prompt at all (it used to keep the whole prompt,
    `p[-0:]`, and overflow the limit: issue 14)."""
    from transformers import AutoTokenizer

    from rankscope.tasks.base import Item
    from rankscope.train import encode

    tok = AutoTokenizer.from_pretrained(small_model_dir)
    it = Item("x", "question : what is 3 plus 4 ? answer :", "3 plus 4 is 7 . #### 7")
    (full,) = encode([it], tok, 512)
    n_prompt = full["labels"].count(-100)
    n_completion = len(full["input_ids"]) - n_prompt
    assert n_prompt > 2 and n_completion > 2
    for max_len in (n_completion + 2, n_completion, n_completion - 1):
        (row,) = encode([it], tok, max_len)
        assert len(row["input_ids"]) == len(row["labels"]) <= max_len
        learned = [t for t in row["labels"] if t != -100]
        assert learned == full["input_ids"][n_prompt:][: min(max_len, n_completion)]
    (two,) = encode([it], tok, n_completion + 2)  # room for two prompt tokens: the last two
    assert two["input_ids"][:2] == full["input_ids"][n_prompt - 2 : n_prompt]


def test_full_sft_of_a_bf16_model_keeps_fp32_master_weights(tmp_path, cache_dir, small_model_dir):
    """train.precision: bf16 on a model loaded in bf16: the trained weights are fp32 (so a
    small AdamW step is not rounded away), and a step far below bf16 resolution moves them."""
    cfg, _, items, tok, _ = _setup(
        tmp_path,
        cache_dir,
        "model.dtype=bfloat16",
        "train.precision=bf16",
        "train.epochs=1",
        "train.save_steps=0",
        "methods.lora.enabled=false",
        "methods.full.enabled=true",
    )
    (run,) = make_plan(cfg)
    model = METHODS["full"].prepare(load_base(cfg.model)[0], run, cfg)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    before = {k: v.detach().float().clone() for k, v in model.named_parameters()}
    rec = train(model, tok, items, cfg, 1e-6, run.seed, tmp_path / "w")
    assert math.isfinite(rec["final_train_loss"])
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    # 8 steps of ~1e-6 each: far below the bf16 spacing (2^-8 relative) of weights ~1e-2,
    # so with bf16 weights they would round away entirely; the fp32 master keeps them.
    moved = [k for k, v in model.named_parameters() if not torch.equal(before[k], v.detach())]
    assert len(moved) > len(before) // 2
