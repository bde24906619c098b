"""Time of one training step of the default toy model on one CPU thread, per configuration.

The default sweep's wall time is its training steps (3 epochs x 1,600 items / 8 per step, per
run). This measures one step (forward, backward, AdamW) on toy-legal batches of 8, the toy
config's micro-batch, for: LoRA r = 32 with dropout 0.05 (the baseline: the library default),
LoRA r = 32 without dropout (what configs/toy.yaml uses), and full fine-tuning. Prints ms per
step and each case's speed-up over the baseline, all measured in this invocation.

    OMP_NUM_THREADS=1 python benchmarks/step_time.py [--steps 50]
"""

from __future__ import annotations

import argparse
import time


def step_ms(case: str, steps: int) -> float:
    import torch
    from transformers import DataCollatorForSeq2Seq

    from rankscope.config import load_config
    from rankscope.models import load_base
    from rankscope.sweep import Sweep
    from rankscope.train import encode

    torch.manual_seed(0)
    cfg = load_config()
    model, tok, _ = load_base(cfg.model)
    rows = encode(Sweep(cfg).items("toy-legal", "train"), tok, 512, False)
    collate = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    if case.startswith("lora"):
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
        dropout = 0.05 if case == "lora dropout 0.05" else 0.0
        lc = LoraConfig(r=32, lora_alpha=64, lora_dropout=dropout, target_modules=targets)
        model = get_peft_model(model, lc)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    warmup = 10
    batches = [collate(rows[i : i + 8]) for i in range(0, 8 * (steps + warmup), 8)]
    for j, batch in enumerate(batches):
        if j == warmup:
            t0 = time.perf_counter()
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    return 1000 * (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    cases = ["lora dropout 0.05", "lora dropout 0", "full"]
    times = {c: step_ms(c, args.steps) for c in cases}
    base = times[cases[0]]
    print(f"{'case (one thread, batch 8)':34s} {'ms/step':>8s} {'speed-up':>9s}")
    for c in cases:
        label = c + (" (baseline)" if c == cases[0] else "")
        print(f"{label:34s} {times[c]:8.1f} {base / times[c]:8.2f}x")


if __name__ == "__main__":
    main()
