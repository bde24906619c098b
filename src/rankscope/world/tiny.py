"""`model.name: tiny-real`: a tiny Llama with a BPE tokenizer, for real data on a CPU.

It exists so the real-benchmark path (local files, five tasks, LoRA + full SFT, report) runs
end to end offline on 2 cores: a byte-level BPE tokenizer trained with `tokenizers` and a
4-layer Llama pretrained for a few hundred steps on the formatted training items of the
sweep's tasks. It learns the answer format, not the benchmarks: expect chance-level scores.
Cached like the toy model, keyed by its spec and the hash of its training text.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

from rankscope.rundir import write_dir_atomic
from rankscope.tasks import TASKS
from rankscope.tasks.base import DataConfig, TaskContext
from rankscope.world.build import default_cache_dir

SPEC = {
    "vocab": 2048,
    "d": 96,
    "layers": 2,
    "heads": 4,
    "ff": 192,
    "steps": 200,
    "seq": 128,
    "batch": 8,
}
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


CORPUS_TASKS = ("gsm8k", "mathqa", "medmcqa", "legalmcq")  # their train splits; MMLU is held out


def corpus(data_dir: str) -> list[str]:
    """The formatted training items (prompt + completion) of the benchmark files in data_dir."""
    ctx = TaskContext(data=DataConfig(source="files", dir=data_dir))
    return [
        f"{it.prompt} {it.completion}"
        for name in CORPUS_TASKS
        for it in TASKS[name].items("train", ctx)
    ]


def build_tokenizer(texts: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=SPEC["vocab"],
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    letters = [f"Answer: {c}" for c in "ABCDE"] * 200  # " A".." E" must be single tokens
    core.train_from_iterator(texts + letters, trainer)
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", core.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def _pretrain(tok: Any, texts: list[str], seed: int = 0) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    conf = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=SPEC["d"],
        intermediate_size=SPEC["ff"],
        num_hidden_layers=SPEC["layers"],
        num_attention_heads=SPEC["heads"],
        num_key_value_heads=SPEC["heads"],
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(conf)
    stream = [i for t in texts for i in tok(t)["input_ids"] + [tok.eos_token_id]]
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    n = SPEC["seq"]
    for _ in range(SPEC["steps"]):
        starts = [rng.randrange(max(1, len(stream) - n)) for _ in range(SPEC["batch"])]
        ids = torch.tensor([stream[s : s + n] for s in starts])
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    model.eval()
    return model


def ensure_tiny_model(mcfg: Any) -> Path:
    """The cached tiny model for model.build_from's training text, built on first use."""
    from rankscope.errors import ConfigError

    if not mcfg.build_from:
        raise ConfigError(
            "model.build_from: model.name tiny-real needs a folder of benchmark files "
            "(laid out like data.dir) whose training text it is pretrained on"
        )
    texts = corpus(mcfg.build_from)
    digest = hashlib.sha256(json.dumps([SPEC, texts]).encode()).hexdigest()[:12]
    cache = Path(mcfg.cache_dir) if mcfg.cache_dir else default_cache_dir()
    target = cache / "tiny" / f"tiny-{digest}"
    if (target / "tiny.json").exists():
        return target
    tok = build_tokenizer(texts)
    model = _pretrain(tok, texts)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "tiny.json").write_text(json.dumps({"spec": SPEC, "texts": len(texts)}))

    write_dir_atomic(target, write, suffix=f".tmp{os.getpid()}")
    return target
