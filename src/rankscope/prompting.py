"""How a prompt becomes model input: the optional chat template, and tokenisation with BOS.

Training and evaluation must build a prompt's tokens the same way, or a fine-tuned model is
scored on input it never saw; both go through these two functions. The BOS rule mirrors
lm-evaluation-harness 0.4.13 (`HFLM.tok_encode`): the tokenizer adds its special tokens as it
is configured to, except when the text already starts with the BOS string (a chat template
that writes `<|begin_of_text|>` itself), where a second BOS would shift every score.
"""

from __future__ import annotations

from typing import Any

from rankscope.errors import ConfigError


def render_prompt(tok: Any, prompt: str, chat: bool) -> str:
    """`prompt` as the model should see it: unchanged, or as one user turn of the chat
    template followed by the assistant header (so the answer is the assistant's reply)."""
    if not chat:
        return prompt
    if not getattr(tok, "chat_template", None):
        raise ConfigError(
            "data.chat_template: the tokenizer has no chat template; "
            "set data.chat_template=false or use an instruct model whose tokenizer has one"
        )
    return tok.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


def encode(tok: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of each text; no extra BOS where the text already begins with it."""
    bos = getattr(tok, "bos_token", None)
    starts = [bool(bos) and t.startswith(bos) for t in texts]
    out: list[list[int]] = [[] for _ in texts]
    for has_bos in (False, True):
        idx = [i for i, s in enumerate(starts) if s == has_bos]
        if idx:  # one batched (Rust) call per group, not one call per text
            kwargs = {"add_special_tokens": False} if has_bos else {}
            enc = tok([texts[i] for i in idx], **kwargs)["input_ids"]
            for i, ids in zip(idx, enc, strict=True):
                out[i] = list(ids)
    return out
