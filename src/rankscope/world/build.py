"""Build (once) and cache the toy world's tokenizer and base model as a normal HF model dir.

The result loads with `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`
like any hub model, so every later stage treats it exactly as it would a real model.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

from rankscope.rundir import write_dir_atomic
from rankscope.world.generator import World, WorldSpec, make_world, pretrain_line, vocabulary

SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")


def default_cache_dir() -> Path:
    env = os.environ.get("RANKSCOPE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "rankscope"


def model_dir(spec: WorldSpec, cache_dir: Path) -> Path:
    return Path(cache_dir) / "worlds" / f"toy-{spec.key()}"


def build_tokenizer(world: World):
    """A word-level tokenizer (the `tokenizers` library) wrapped as a fast HF tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + tuple(vocabulary(world)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # like Llama's tokenizer: BOS is added to every encoded text
    core.post_processor = processors.TemplateProcessing(
        single="[BOS] $A", pair="[BOS] $A $B", special_tokens=[("[BOS]", vocab["[BOS]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        padding_side="right",
    )


def _model_config(spec: WorldSpec, vocab_size: int, tok):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.d_model,
        intermediate_size=spec.d_ff,
        num_hidden_layers=spec.n_layers,
        num_attention_heads=spec.n_heads,
        num_key_value_heads=spec.n_heads,
        max_position_embeddings=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )


def _batches(world: World, tok, steps: int, batch: int, seq: int, seed: int):
    """Each step's `batch` documents ('[BOS] line [EOS]'), packed whole into rows of `seq`
    tokens, each document attending only to itself.

    The documents are 5 to 30 tokens long, so padding them to the longest would make a batch
    about half padding and the build twice as slow. Position ids restart at every document;
    with no attention mask, transformers reads those restarts as packed sequences and masks
    attention between documents, so each is computed exactly as if it were alone and the
    loss (mean over the predicted tokens) is that of the padded batch of the same documents.
    Yields (input_ids, labels, position_ids).
    """
    import torch

    rng = random.Random(seed + 1)
    for _ in range(steps):
        lines = [pretrain_line(world, rng) for _ in range(batch)]
        docs = [
            ids[:seq] for ids in tok([f"{line} {tok.eos_token}" for line in lines])["input_ids"]
        ]
        rows: list[list[list[int]]] = []
        fill: list[int] = []  # tokens used per row
        for doc in docs:  # first fit, in order
            r = next((i for i, used in enumerate(fill) if used + len(doc) <= seq), len(rows))
            if r == len(rows):
                rows.append([])
                fill.append(0)
            rows[r].append(doc)
            fill[r] += len(doc)
        ids = torch.full((len(rows), seq), tok.pad_token_id)
        labels = torch.full((len(rows), seq), -100)
        pos = torch.zeros((len(rows), seq), dtype=torch.long)
        for r, row in enumerate(rows):
            at = 0
            for doc in row:
                ids[r, at : at + len(doc)] = torch.tensor(doc)
                labels[r, at + 1 : at + len(doc)] = ids[r, at + 1 : at + len(doc)]
                pos[r, at : at + len(doc)] = torch.arange(len(doc))
                at += len(doc)
            pos[r, at:] = torch.arange(seq - at)  # the padded tail: one more (unlearned) piece
        yield ids, labels, pos


def pretrain(world: World, tok, on_step: Callable[[int, int, float], None] | None = None):
    """Plain AdamW + cosine loop: this is the base model's 'pretraining', not the study."""
    import torch
    from transformers import LlamaForCausalLM

    spec = world.spec
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(_model_config(spec, len(tok), tok))
    opt = torch.optim.AdamW(
        model.parameters(), lr=spec.pretrain_lr, weight_decay=0.01, betas=(0.9, 0.98)
    )
    warm = max(1, spec.pretrain_steps // 20)

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        frac = (step - warm) / max(1, spec.pretrain_steps - warm)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    batches = _batches(
        world, tok, spec.pretrain_steps, spec.pretrain_batch, spec.pretrain_seq, spec.seed
    )
    for step, (ids, labels, pos) in enumerate(batches):
        loss = model(input_ids=ids, labels=labels, position_ids=pos, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if on_step:
            on_step(step + 1, spec.pretrain_steps, loss.item())
    model.eval()
    return model


def toy_model_config(spec: WorldSpec):
    """The base model's config without building (or pretraining) anything."""
    world = make_world(spec)
    tok = build_tokenizer(world)
    return _model_config(spec, len(tok), tok)


def ensure_base_model(
    spec: WorldSpec,
    cache_dir: Path | None = None,
    *,
    force: bool = False,
    on_step: Callable[[int, int, float], None] | None = None,
) -> Path:
    """Return the cached base-model dir for `spec`, building it first if needed.

    The directory is written under a temporary name and renamed into place last, so a crash
    mid-build never leaves a half model that a later run would trust.
    """
    target = model_dir(spec, cache_dir or default_cache_dir())
    if (target / "world.json").exists() and not force:
        return target
    t0 = time.time()
    world = make_world(spec)
    tok = build_tokenizer(world)
    model = pretrain(world, tok, on_step)
    meta = {"spec": spec.model_spec(), "key": spec.key(), "build_seconds": time.time() - t0}

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "world.json").write_text(json.dumps(meta, indent=2))  # the "complete" mark

    write_dir_atomic(target, write, suffix=f".tmp{os.getpid()}")  # builders may race
    return target


def base_model_path(spec: WorldSpec, cache_dir: Path | None = None) -> Path:
    """The base model a sweep uses: the shipped weights for a shipped world (the same bytes on
    every machine), else the one built from the recipe on this machine (cached)."""
    from rankscope.world.shipped import shipped_model_dir

    return shipped_model_dir(spec) or ensure_base_model(spec, cache_dir)


def needs_build(spec: WorldSpec, cache_dir: Path | None = None) -> bool:
    """Whether `base_model_path` would pretrain a model first (no shipped one, none cached)."""
    from rankscope.world.shipped import shipped_model_dir

    if shipped_model_dir(spec) is not None:
        return False
    return not (model_dir(spec, cache_dir or default_cache_dir()) / "world.json").exists()
