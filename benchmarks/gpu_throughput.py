"""Training throughput (tokens/s) and MFU of full SFT and LoRA on a randomly initialised model
of Llama-3.2-1B or Llama-3.1-8B shape (issue 16, P5).

The weights cannot travel to the GPU machine and do not matter for speed: the shapes do. The
model is built from a `LlamaConfig` preset straight on the device (`cuda` when available,
else CPU), in bf16 on a GPU (fp32 on CPU), with sdpa attention, and trained for `--steps`
timed steps after `--warmup` untimed ones with AdamW (fused on CUDA) on random token batches
of `--batch` x `--seq` (labels = inputs). Full SFT trains every weight in the model's dtype
(bf16 weights, gradients and optimizer state: 8 bytes per parameter, which lets the 8B shape
fit in one H200's memory); LoRA is peft's r = 16, alpha 32, q/k/v/o_proj, no dropout, with
peft's defaults (adapter weights upcast to fp32). `--grad-ckpt` turns on non-reentrant
gradient checkpointing; `--compile` wraps the model in `torch.compile`.

tokens/s = batch x seq x steps / time of the timed steps (`torch.cuda.synchronize` at both
ends on a GPU). MFU = achieved model FLOP/s / `--peak-tflops` (default 989 TFLOP/s, the bf16
dense peak of an H100/H200, when the CUDA device's name says H100 or H200; otherwise it must
be given, and MFU prints as n/a). Model FLOPs per token (the PaLM appendix-B convention;
recomputation under gradient checkpointing is not counted):

    full: 6 N + 12 L H S
    LoRA: 4 N + 6 N_lora + 12 L H S   (no weight gradients for the frozen N)

N = the weights of every `nn.Linear` of the base model (the LM head included; with tied
embeddings the shared matrix counts once, as the head's matmul; the embedding lookup and the
norms are not matmuls), N_lora = the adapter's parameters, L layers, H hidden size, S
`--seq` (attention scores and values: 2 x 2 S H FLOPs a token a layer forward, x3 for
forward + backward, causal masking not discounted). Prints a table; `--json OUT` writes the
results with when and on what they were measured. Run from the repository root:

    python benchmarks/gpu_throughput.py --preset llama-3.2-1b --batch 8 --seq 2048
    python benchmarks/gpu_throughput.py --preset llama-3.1-8b --batch 2 --seq 2048 --grad-ckpt
    python benchmarks/gpu_throughput.py --preset tiny --steps 2      # CPU check (the tests)
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import time
import warnings
from pathlib import Path
from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=512,
        tie_word_embeddings=False,
    ),
    "llama-3.2-1b": dict(
        hidden_size=2048,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=8192,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),
    "llama-3.1-8b": dict(
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=14336,
        vocab_size=128256,
        tie_word_embeddings=False,
    ),
}
"""Shapes only; the Llama-3 rope (theta 500,000) and norm settings are common to all."""
COMMON = dict(rope_theta=500000.0, rms_norm_eps=1e-5, max_position_embeddings=131072)
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}
"""bf16 dense peak by device name (SXM; the H100 PCIe's is lower: pass --peak-tflops)."""
LORA = dict(
    r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
)


def build_model(preset: str, device: Any, dtype: Any, seed: int) -> Any:
    """A randomly initialised Llama of the preset's shape, built on `device` in `dtype`."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    conf = LlamaConfig(**PRESETS[preset], **COMMON, use_cache=False)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(conf, dtype=dtype, attn_implementation="sdpa")
    return model


def matmul_params(model: Any) -> int:
    """N: the weights of every nn.Linear of the base model (a tied head counted once, as the
    head's matmul), adapter layers excluded."""
    import torch

    seen, n = set(), 0
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and "lora_" not in name:
            if id(mod.weight) not in seen:
                seen.add(id(mod.weight))
                n += mod.weight.numel()
    return n


def prepare(model: Any, method: str, grad_ckpt: bool) -> Any:
    """The model to train: every weight trainable (full) or peft LoRA on q/k/v/o."""
    if grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(**LORA, bias="none", task_type="CAUSAL_LM"))


def flops_per_token(method: str, n: int, n_lora: int, layers: int, hidden: int, seq: int) -> int:
    """Model FLOPs per trained token (module docstring)."""
    attention = 12 * layers * hidden * seq
    if method == "full":
        return 6 * n + attention
    return 4 * n + 6 * n_lora + attention


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_steps(model: Any, args: argparse.Namespace, device: Any, vocab: int) -> tuple:
    """(seconds of the timed steps, every step's loss) of warmup + steps AdamW steps."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")
    gen = torch.Generator(device).manual_seed(args.seed)
    step = torch.compile(model) if args.compile else model
    model.train()
    losses, t0 = [], 0.0
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            sync(device)
            t0 = time.perf_counter()
        x = torch.randint(vocab, (args.batch, args.seq), device=device, generator=gen)
        loss = step(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    sync(device)
    seconds = time.perf_counter() - t0
    return seconds, [float(v) for v in losses]


def measure(method: str, args: argparse.Namespace, device: Any, dtype: Any) -> dict[str, Any]:
    """One method's row: tokens/s, FLOPs, MFU, parameters, losses, peak memory."""
    import torch

    base = build_model(args.preset, device, dtype, args.seed)
    conf = base.config
    n = matmul_params(base)
    total = sum(p.numel() for p in base.parameters())
    model = prepare(base, method, args.grad_ckpt)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_lora = trainable if method == "lora" else 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds, losses = train_steps(model, args, device, conf.vocab_size)
    tokens_s = args.batch * args.seq * args.steps / seconds
    fpt = flops_per_token(method, n, n_lora, conf.num_hidden_layers, conf.hidden_size, args.seq)
    tflops = tokens_s * fpt / 1e12
    peak_mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    del model, base
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "method": method,
        "tokens_per_s": tokens_s,
        "step_s": seconds / args.steps,
        "flops_per_token": fpt,
        "achieved_tflops": tflops,
        "mfu": tflops / args.peak_tflops if args.peak_tflops else None,
        "total_params": total,
        "trainable_params": trainable,
        "matmul_params": n,
        "losses": losses,
        "peak_memory_gib": peak_mem / 2**30 if peak_mem is not None else None,
    }


def resolve_device(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(device, dtype, device name); fills in args.peak_tflops from the device name."""
    import torch

    name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    gpu = device.type == "cuda"
    label = torch.cuda.get_device_name(device) if gpu else platform.processor() or "cpu"
    dtype_name = args.dtype if args.dtype != "auto" else ("bfloat16" if gpu else "float32")
    if args.peak_tflops is None and gpu:
        args.peak_tflops = next((v for k, v in PEAK_TFLOPS.items() if k in label), None)
    return device, getattr(torch, dtype_name), label


def environment(args: argparse.Namespace, label: str, dtype: Any) -> dict[str, Any]:
    """What was measured and when: the settings, the device, the library versions."""
    import peft
    import torch
    import transformers

    return {
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": label,
        "dtype": str(dtype).removeprefix("torch."),
        "preset": args.preset,
        "shape": PRESETS[args.preset],
        "batch": args.batch,
        "seq": args.seq,
        "steps": args.steps,
        "warmup": args.warmup,
        "grad_ckpt": args.grad_ckpt,
        "compile": args.compile,
        "peak_tflops": args.peak_tflops,
        "lora": LORA,
        "flops_formula": "full 6N + 12LHS; LoRA 4N + 6N_lora + 12LHS; N = nn.Linear weights",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "python": platform.python_version(),
        },
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'method':<6} {'tokens/s':>11} {'step s':>8} {'TFLOP/s':>9} {'MFU':>7} "
    head += f"{'trainable':>14} {'peak GiB':>9} {'loss first→last':>17}"
    lines = [head]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        mem = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "-"
        loss = f"{r['losses'][0]:.3f}→{r['losses'][-1]:.3f}"
        lines.append(
            f"{r['method']:<6} {r['tokens_per_s']:>11,.0f} {r['step_s']:>8.3f} "
            f"{r['achieved_tflops']:>9.3g} {mfu:>7} {r['trainable_params']:>14,} {mem:>9} "
            f"{loss:>17}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")  # peft's
    device, dtype, label = resolve_device(args)
    env = environment(args, label, dtype)
    print(
        f"{args.preset} on {label} ({device.type}, {env['dtype']}), batch {args.batch} x seq "
        f"{args.seq}, {args.warmup} warmup + {args.steps} timed steps, peak "
        f"{args.peak_tflops or 'n/a'} TFLOP/s"
    )
    rows = [measure(m, args, device, dtype) for m in args.methods]
    print(table(rows))
    if args.peak_tflops is None:
        print("MFU: n/a (give --peak-tflops: the device's dense peak for this dtype)")
    bad = [r["method"] for r in rows if not all(math.isfinite(x) for x in r["losses"])]
    if bad:
        print(f"warning: non-finite loss in {', '.join(bad)}")
    result = {**env, "results": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=list(PRESETS), default="llama-3.2-1b")
    p.add_argument("--methods", nargs="+", choices=["full", "lora"], default=["full", "lora"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak, TFLOP/s")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results to this file")
    return p.parse_args(argv)


if __name__ == "__main__":
    main()
