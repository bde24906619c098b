"""peft's data-driven rank choices as predictors beside `rankscope.probe`'s gradient probe.

Both *redistribute a budget* you give them, they do not choose one: EVA (`init_lora_weights=
"eva"`) sums r x modules components and hands them to the modules whose input activations
explain the most variance (at most rho·r each); AdaLoRA starts every module at `init_r` and
prunes to an average of `target_r` by an importance score during a short training run. Here
both get the same budget, `budget_rank` (default: the grid's middle rank), and the
prediction is the median over modules of the per-module rank peft assigned, rounded up to
the grid as the probe's is. Their mean rank is the budget by construction; only the median
(the spread of the allocation) can move.

* EVA: `peft.initialize_lora_eva_weights` on the probe's batches (forward passes only,
  cycled until the components converge, stopped after max(64, 4 x batches) passes); the ranks
  are read from the model's `peft_config['default'].rank_pattern` (a module missing from it
  has rank r; one EVA gave rank 0 is unwrapped).
* AdaLoRA: `steps` AdamW steps at the config's LoRA lr on the probe's batches with
  `update_and_allocate` after each, tinit = tfinal = steps // 4 (at least 1); the ranks are
  the kept entries of its final `rank_pattern` masks.
"""

from __future__ import annotations

import time
from typing import Any

from rankscope.config import SweepConfig
from rankscope.probe_core import (
    Prediction,
    ProbeOptions,
    budget_rank,
    summarise,
    target_names,
    tokens_of,
)
from rankscope.targets import resolve_targets

EVA_MAX_FORWARDS = 64
EVA_MAX_PASSES = 4
"""EVA cycles the batches until its components converge; it is stopped after
max(EVA_MAX_FORWARDS, EVA_MAX_PASSES x batches) forward passes."""
_ADAPTER = "default"


class _NoConvergence(Exception):
    pass


def _targets(model: Any, cfg: SweepConfig) -> Any:
    return resolve_targets(model.config.model_type, cfg.methods.lora.target_modules)


def _key(name: str) -> str:
    """A peft module name without its wrapper prefixes and AdaLoRA's parameter suffix
    ('model.layers.0.self_attn.q_proj.lora_E.default' -> 'model.layers.0.self_attn.q_proj')."""
    name = name.removesuffix(f".lora_E.{_ADAPTER}")
    for prefix in ("base_model.model.", "base_model."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def eva_prediction(model: Any, batches: list[dict], cfg: SweepConfig, opts: ProbeOptions):
    """EVA's per-module ranks for a budget of r = budget_rank per module."""
    from peft import EvaConfig, LoraConfig, get_peft_model, initialize_lora_eva_weights

    r = budget_rank(cfg, opts)
    names = target_names(model, cfg)
    conf = LoraConfig(
        r=r,
        lora_alpha=cfg.methods.lora.alpha_for(r),
        target_modules=_targets(model, cfg),
        init_lora_weights="eva",
        # label mask off: the toy's completions are a few tokens, fewer than the components
        eva_config=EvaConfig(rho=opts.eva_rho, use_label_mask=False),
        task_type="CAUSAL_LM",
    )
    t0 = time.perf_counter()
    peft_model = get_peft_model(model, conf)
    seen: list[dict] = []
    limit = max(EVA_MAX_FORWARDS, EVA_MAX_PASSES * len(batches))

    def forward(m: Any, inputs: dict) -> Any:
        if len(seen) >= limit:
            raise _NoConvergence
        seen.append(inputs)
        return m(**inputs)

    try:
        initialize_lora_eva_weights(
            peft_model, dataloader=batches, forward_fn=forward, show_progress_bar=False
        )
    except _NoConvergence:
        cost = (time.perf_counter() - t0, tokens_of(seen), len(seen))
        note = f"EVA did not converge in {limit} forward passes"
        return Prediction("eva", None, None, None, *cost, {}, note)
    pattern = peft_model.peft_config[_ADAPTER].rank_pattern
    wrapped = {_key(n) for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    ranks = {n: (pattern.get(n, r) if n in wrapped else 0) for n in names}
    per_module = {n: {"rank": float(k)} for n, k in ranks.items()}
    cost = (time.perf_counter() - t0, tokens_of(seen), len(seen))
    return summarise("eva", per_module, cfg, cost, f"budget r={r}, rho={opts.eva_rho:g}")


def _schedule(steps: int) -> tuple[int, int]:
    """(tinit, tfinal) leaving AdaLoRA a budgeting phase: tinit < steps - tfinal."""
    t = max(1, steps // 4)
    while t > 0 and t >= steps - t:
        t -= 1
    return t, max(1, t)


def adalora_prediction(model: Any, batches: list[dict], cfg: SweepConfig, opts: ProbeOptions):
    """AdaLoRA's final per-module ranks after a short run, from init_r = the grid's largest
    rank (at least 2 x budget_rank) down to an average of target_r = budget_rank."""
    import torch
    from peft import AdaLoraConfig, get_peft_model

    steps, r = len(batches), budget_rank(cfg, opts)
    if steps < 3:
        note = "AdaLoRA needs at least 3 steps (warm-up, budgeting, final)"
        return Prediction("adalora", None, None, None, 0.0, 0, 0, {}, note)
    tinit, tfinal = _schedule(steps)
    init_r = max(max(cfg.methods.lora.ranks), 2 * r)  # room to prune down to target_r
    names = target_names(model, cfg)  # before peft wraps them
    conf = AdaLoraConfig(
        init_r=init_r,
        target_r=r,
        lora_alpha=cfg.methods.lora.alpha_for(r),
        tinit=tinit,
        tfinal=tfinal,
        deltaT=1,
        total_step=steps,
        target_modules=_targets(model, cfg),
        task_type="CAUSAL_LM",
    )
    t0 = time.perf_counter()
    peft_model = get_peft_model(model, conf)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    lc = cfg.methods.lora  # the budget rank's first rate where the grid has that rank
    opt = torch.optim.AdamW(params, lr=(lc.lrs_for(r) if r in lc.ranks else lc.lrs)[0])
    peft_model.train()
    for step, batch in enumerate(batches):
        peft_model(**batch).loss.backward()
        opt.step()
        peft_model.base_model.update_and_allocate(step)
        opt.zero_grad()
    pattern = {_key(n): v for n, v in peft_model.peft_config[_ADAPTER].rank_pattern.items()}
    per_module = {n: {"rank": float(sum(_mask(pattern, n, init_r)))} for n in names}
    cost = (time.perf_counter() - t0, tokens_of(batches), steps)
    note = f"init_r={init_r} -> target_r={r}"
    return summarise("adalora", per_module, cfg, cost, note)


def _mask(pattern: dict, name: str, init_r: int) -> list[bool]:
    """The kept-rank mask of one module (all kept when AdaLoRA left it out of its pattern)."""
    for key, mask in pattern.items():
        if key == name or key.endswith("." + name) or name.endswith("." + key):
            return list(mask)
    return [True] * init_r


PEFT_PREDICTORS = {"eva": eva_prediction, "adalora": adalora_prediction}
