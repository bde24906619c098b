"""Sweep configuration: YAML -> typed, validated dataclasses.

Defaults are the paper's (arXiv 2512.15634): LoRA r in {8,16,32,64,128}, alpha = 2r,
dropout 0.05 on q/k/v/o_proj; full SFT with AdamW at lr 5e-5; 3 epochs; batch 2 x grad-accum
4; linear schedule with 10% warmup; bf16 where the device supports it. The embedded toy
sweep (`configs/toy.yaml`) overrides only what a 1M-parameter model needs.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rankscope.errors import ConfigError, did_you_mean

PACKAGED_CONFIGS = Path(__file__).parent / "configs"
DEFAULT_CONFIG = PACKAGED_CONFIGS / "toy.yaml"


@dataclass
class ModelConfig:
    name: str = "toy"
    """'toy' = the embedded toy world's base model; 'tiny-real' = a tiny BPE Llama built from
    model.build_from's benchmark files (CPU pipeline checks); else a hub id or a local dir."""
    build_from: str | None = None
    """For tiny-real: folder of benchmark files (layout of data.dir) to pretrain it on."""
    world: str = "default"
    """Toy world preset ('default' or 'small'); only used when name is 'toy'."""
    world_seed: int = 0
    """Seed of the toy world (facts, problems, pretraining)."""
    cache_dir: str | None = None
    """Where built toy models are cached (default $RANKSCOPE_CACHE or ~/.cache/rankscope)."""
    dtype: str = "auto"
    """Weights dtype to load: auto | float32 | bfloat16 | float16."""
    attn_implementation: str | None = None
    """Passed to from_pretrained only when set (e.g. 'sdpa', 'eager')."""
    trust_remote_code: bool = False
    """Passed to from_pretrained only when true."""


@dataclass
class TasksConfig:
    train: list[str] = field(
        default_factory=lambda: ["toy-arith", "toy-mathmcq", "toy-med", "toy-legal"]
    )
    """Tasks to fine-tune on: one run per task x method x seed."""
    eval: list[str] = field(
        default_factory=lambda: ["toy-arith", "toy-mathmcq", "toy-general", "toy-med", "toy-legal"]
    )
    """Every run is evaluated on all of these (in-domain, cross-domain, retention)."""
    retention: str = "toy-general"
    """The eval task that measures retained knowledge (never trained on)."""
    max_train_items: int | None = None
    """Cap on training items per task (None = all)."""
    max_eval_items: int | None = None
    """Cap on eval items per task (None = all)."""


@dataclass
class DataConfig:
    source: str = "hub"
    """Where real benchmarks come from: hub (datasets.load_dataset) | files (local copies)."""
    dir: str | None = None
    """Root of local benchmark files (layout: gsm8k/, mmlu/, medmcqa/, mathqa/, legalmcq/)."""
    on_bad_row: str = "stop"
    """A malformed data row: stop (error naming file:line) | skip (skip it, report a count)."""
    shots: int = 0
    """Few-shot exemplars prepended to every eval prompt (MMLU: the subject's dev rows;
    others: the first k train items); 0 = zero-shot."""
    chat_template: bool = False
    """Wrap prompts in the tokenizer's chat template (instruct models)."""
    mmlu_subjects: list[str] = field(default_factory=list)
    """MMLU subjects or categories (stem, humanities, social_sciences, other) to evaluate on;
    empty = all subjects no training task uses."""
    mmlu_train_subjects: list[str] = field(default_factory=list)
    """MMLU subjects or categories to train on when mmlu is a training task (must not
    overlap the evaluated subjects)."""
    mathqa_target: str = "rationale"
    """MathQA training completion: rationale (worked rationale + letter) | letter."""
    holdout_fraction: float = 0.2
    """When only one labelled split exists on disk, this fraction (by a stable hash of the
    item) is the test split and the rest the train split."""


@dataclass
class FullConfig:
    enabled: bool = True
    """Include full fine-tuning (all weights trainable)."""
    lr: float = 5e-5
    """Learning rate of full SFT (paper: 5e-5)."""


@dataclass
class LoraConfig:
    enabled: bool = True
    """Include LoRA runs, one per rank."""
    ranks: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    """LoRA ranks r."""
    alpha: str = "2r"
    """Scaling numerator: a rule '<k>r' (alpha = k*r; paper '2r') or a fixed number ('16')."""
    dropout: float = 0.05
    """LoRA dropout."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    """Module names LoRA wraps; ['all-linear'] for every linear layer but the head."""
    lr: float = 2e-4
    """Learning rate of LoRA (the paper gives none; 2e-4 is the common PEFT choice)."""
    use_rslora: bool = False
    """Rank-stabilised scaling alpha/sqrt(r) instead of alpha/r."""
    use_dora: bool = False
    """Weight-decomposed LoRA (DoRA)."""
    init: str = "default"
    """LoRA init: default | gaussian | pissa."""


@dataclass
class MethodsConfig:
    base: bool = True
    """Evaluate the untouched base model (one row, shared by all runs)."""
    full: FullConfig = field(default_factory=FullConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class TrainConfig:
    epochs: float = 3.0
    """Training epochs."""
    batch_size: int = 2
    """Per-device micro-batch size."""
    grad_accum: int = 4
    """Gradient accumulation steps (effective batch = batch_size x grad_accum x devices)."""
    scheduler: str = "linear"
    """LR schedule: linear | cosine | constant_with_warmup."""
    warmup_ratio: float = 0.1
    """Fraction of steps with linear warmup."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    max_seq_len: int = 512
    """Longer training sequences are truncated from the left of the prompt."""
    precision: str = "auto"
    """auto (bf16 where supported, else fp32) | fp32 | bf16 | fp16."""
    logging_steps: int = 5
    """Log the train loss every N optimizer steps."""
    save_steps: int = 50
    """Save a resumable Trainer checkpoint every N optimizer steps (0 = never)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% slower)."""
    oom_retry: bool = True
    """On out-of-memory, retry once with half the micro-batch and twice the grad-accum."""


@dataclass
class EvalConfig:
    batch_size: int = 32
    """Items per forward pass."""
    max_new_tokens: int = 96
    """Generation budget for generative tasks."""
    acc_norm: bool = True
    """Also score MCQ by each option text's log-likelihood per character (acc_norm)."""


@dataclass
class AnalysisConfig:
    enabled: bool = True
    """Run the analyze stage (spectral ΔW + attention) for every run."""
    modules: str = "targets"
    """Modules to analyse: 'targets' (the LoRA target modules of every layer) | 'all-linear'."""
    top_k: int = 500
    """k of the top-k singular-vector similarity (paper: 500; capped at the matrix size)."""
    intruder_k: int = 10
    """Top singular vectors of W1 checked for intruder dimensions."""
    intruder_eps: list[float] = field(default_factory=lambda: [0.5])
    """Best-match cosine thresholds below which a singular vector is an intruder."""
    attention: bool = True
    """Attention analysis (entropy, sink mass, JS divergence vs base, CKA, head ablation)."""
    probe_items: int = 32
    """Probe prompts drawn (seeded) from the sweep's eval tasks."""
    ablate_top: int = 2
    """Heads (by JS divergence) to ablate per run; 0 disables ablation."""
    ablation_items: int = 64
    """Eval items per task used to measure an ablation's accuracy change."""


@dataclass
class ExecutorConfig:
    kind: str = "local"
    """Where runs execute: local | slurm | ray."""
    gpus_per_run: int = 1
    """GPUs per run (local with several GPUs, slurm, ray); 0 on CPU-only machines."""
    cpus_per_run: int = 1
    """CPU cores per run (slurm, ray)."""
    cpu_workers: int = 1
    """local on CPU: runs at once, each worker a process with cores / cpu_workers threads."""
    max_retries: int = 2
    """Times a lost or preempted run is retried from its last checkpoint (slurm, ray)."""
    accelerate_config: str | None = None
    """accelerate config file (DDP/FSDP/DeepSpeed) for runs that span several GPUs."""
    address: str | None = None
    """Ray: address of an existing cluster ('auto', 'ray://host:10001'); None = local Ray."""
    slurm_partition: str | None = None
    """Slurm partition."""
    slurm_time_min: int = 240
    """Slurm time limit per run, in minutes (a timed-out run is requeued and resumes)."""
    slurm_array_parallelism: int = 16
    """Most array tasks of the sweep running at once."""
    slurm_cluster: str | None = None
    """submitit cluster: None = auto (slurm when available), 'local' or 'debug' to test."""


@dataclass
class SweepConfig:
    name: str = "toy"
    """Sweep name; output goes to runs/<name>/ unless output_dir is set."""
    output_dir: str | None = None
    """Output directory of the sweep."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """One run per seed for every (task, method)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    data: DataConfig = field(default_factory=DataConfig)
    methods: MethodsConfig = field(default_factory=MethodsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)

    @property
    def out_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------- building + checking
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp` (after YAML parsing) and convert mildly."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        names = " or ".join(_type_name(a) for a in args)
        raise ConfigError(f"{where}: expected {names}, got {value!r}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of keys, got {value!r}")
        return _build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads '5e-5' as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(
                f"{_join(where, key)}: unknown key{did_you_mean(str(key), names)};"
                f" valid keys here: {', '.join(names)}"
            )
    kwargs = {k: _coerce(v, hints[k], _join(where, k)) for k, v in data.items()}
    return cls(**kwargs)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def parse_set(assignments: list[str]) -> dict[str, Any]:
    """`--set a.b=value` (value parsed as YAML, so `[4,16]` is a list) -> nested dict."""
    out: dict[str, Any] = {}
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.epochs=2")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def read_yaml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        loc = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError(f"{path}: malformed YAML at {loc}: {e.problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: malformed YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return data


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> SweepConfig:
    """Read, override, type-check and validate a sweep config."""
    src = Path(path) if path else DEFAULT_CONFIG
    data = _merge(read_yaml(src), parse_set(overrides or []))
    try:
        cfg = _build(SweepConfig, data, "")
    except ConfigError as e:
        raise ConfigError(f"{src}: {e}") from None
    try:
        validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"{src}: {e}") from None
    return cfg


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def alpha_for(rule: str, rank: int) -> float:
    """alpha from its rule: '2r' -> 2*rank, 'r' -> rank, '16' -> 16."""
    text = rule.strip().replace(" ", "")
    try:
        if text.endswith("r"):
            k = text[:-1]
            return (float(k) if k not in ("", "*") else 1.0) * rank
        return float(text)
    except ValueError:
        raise ConfigError(
            f"methods.lora.alpha: {rule!r} is neither '<k>r' (e.g. '2r') nor a number"
        ) from None


def validate(cfg: SweepConfig) -> None:
    """Cross-field and range checks; each message names the field and what is valid."""
    from rankscope.tasks import TASKS

    _check(
        cfg.name.strip() != "" and "/" not in cfg.name, "name: must be a non-empty name without '/'"
    )
    _check(len(cfg.seeds) > 0, "seeds: give at least one seed")
    t = cfg.train
    _check(t.epochs > 0, f"train.epochs: must be > 0, got {t.epochs}")
    _check(t.batch_size >= 1, f"train.batch_size: must be >= 1, got {t.batch_size}")
    _check(t.grad_accum >= 1, f"train.grad_accum: must be >= 1, got {t.grad_accum}")
    _check(0 <= t.warmup_ratio < 1, f"train.warmup_ratio: must be in [0, 1), got {t.warmup_ratio}")
    _check(t.max_seq_len >= 8, f"train.max_seq_len: must be >= 8, got {t.max_seq_len}")
    _check(t.logging_steps >= 1, "train.logging_steps: must be >= 1")
    for key, options in (
        ("scheduler", ("linear", "cosine", "constant_with_warmup")),
        ("precision", ("auto", "fp32", "bf16", "fp16")),
    ):
        val = getattr(t, key)
        _check(
            val in options,
            f"train.{key}: {val!r} is not one of {', '.join(options)}{did_you_mean(val, options)}",
        )
    dtypes = ("auto", "float32", "bfloat16", "float16")
    _check(
        cfg.model.dtype in dtypes,
        f"model.dtype: {cfg.model.dtype!r} is not one of {', '.join(dtypes)}",
    )
    _check(
        cfg.model.world in ("default", "small"),
        f"model.world: {cfg.model.world!r} is not one of default, small",
    )
    m = cfg.methods
    _check(m.full.lr > 0, f"methods.full.lr: must be > 0, got {m.full.lr}")
    _check(m.lora.lr > 0, f"methods.lora.lr: must be > 0, got {m.lora.lr}")
    _check(0 <= m.lora.dropout < 1, "methods.lora.dropout: must be in [0, 1)")
    inits = ("default", "gaussian", "pissa")
    _check(
        m.lora.init in inits, f"methods.lora.init: {m.lora.init!r} is not one of {', '.join(inits)}"
    )
    if m.lora.enabled:
        _check(len(m.lora.ranks) > 0, "methods.lora.ranks: give at least one rank")
        _check(len(set(m.lora.ranks)) == len(m.lora.ranks), "methods.lora.ranks: duplicate rank")
        _check(len(m.lora.target_modules) > 0, "methods.lora.target_modules: give at least one")
        for r in m.lora.ranks:
            _check(r > 0, f"methods.lora.ranks: every rank must be a positive integer, got {r}")
            _check(
                alpha_for(m.lora.alpha, r) > 0,
                f"methods.lora.alpha: must be > 0, got {m.lora.alpha!r}",
            )
    _check(m.base or m.full.enabled or m.lora.enabled, "methods: every method is disabled")
    _check(cfg.eval.batch_size >= 1, "eval.batch_size: must be >= 1")
    _check(cfg.eval.max_new_tokens >= 1, "eval.max_new_tokens: must be >= 1")
    for key in ("train", "eval"):
        names = getattr(cfg.tasks, key)
        _check(len(names) > 0 or key == "train", f"tasks.{key}: give at least one task")
        for name in names:
            _check(
                name in TASKS,
                f"tasks.{key}: unknown task {name!r}{did_you_mean(name, TASKS)}"
                f"; known: {', '.join(sorted(TASKS))}",
            )
    _check(
        cfg.tasks.retention in cfg.tasks.eval,
        f"tasks.retention: {cfg.tasks.retention!r} must also be listed in tasks.eval",
    )
    # MMLU may be both: trained on some subjects, retention measured on the others.
    split_mmlu = cfg.tasks.retention == "mmlu" and bool(cfg.data.mmlu_train_subjects)
    _check(
        cfg.tasks.retention not in cfg.tasks.train or split_mmlu,
        f"tasks.retention: "
        f"{cfg.tasks.retention!r} is also a training task; retention is measured on a task "
        "no run trains on (for mmlu: name the trained subjects in data.mmlu_train_subjects)",
    )
    for key in ("max_train_items", "max_eval_items"):
        val = getattr(cfg.tasks, key)
        _check(val is None or val >= 1, f"tasks.{key}: must be >= 1 or null")
    a = cfg.analysis
    _check(
        a.modules in ("targets", "all-linear"),
        f"analysis.modules: {a.modules!r} is not one of targets, all-linear",
    )
    _check(
        a.top_k >= 1 and a.intruder_k >= 1, "analysis.top_k and analysis.intruder_k: must be >= 1"
    )
    _check(
        all(0 < e < 1 for e in a.intruder_eps),
        "analysis.intruder_eps: every threshold must be in (0, 1)",
    )
    _check(
        a.probe_items >= 1 and a.ablate_top >= 0 and a.ablation_items >= 1,
        "analysis.probe_items/ablation_items must be >= 1 and analysis.ablate_top >= 0",
    )
    d = cfg.data
    for key, val, options in (
        ("source", d.source, ("hub", "files")),
        ("on_bad_row", d.on_bad_row, ("stop", "skip")),
        ("mathqa_target", d.mathqa_target, ("rationale", "letter")),
    ):
        _check(
            val in options,
            f"data.{key}: {val!r} is not one of {', '.join(options)}{did_you_mean(val, options)}",
        )
    _check(d.shots >= 0, f"data.shots: must be >= 0, got {d.shots}")
    _check(0 < d.holdout_fraction < 1, "data.holdout_fraction: must be in (0, 1)")
    _check(t.save_steps >= 0, f"train.save_steps: must be >= 0, got {t.save_steps}")
    e = cfg.executor
    kinds = ("local", "slurm", "ray")
    _check(
        e.kind in kinds,
        f"executor.kind: {e.kind!r} is not one of {', '.join(kinds)}{did_you_mean(e.kind, kinds)}",
    )
    _check(e.gpus_per_run >= 0, "executor.gpus_per_run: must be >= 0")
    _check(e.cpus_per_run >= 1, "executor.cpus_per_run: must be >= 1")
    _check(e.cpu_workers >= 1, "executor.cpu_workers: must be >= 1")
    _check(e.max_retries >= 0, "executor.max_retries: must be >= 0")
    _check(e.slurm_time_min >= 1, "executor.slurm_time_min: must be >= 1")
    _check(e.slurm_array_parallelism >= 1, "executor.slurm_array_parallelism: must be >= 1")
    clusters = (None, "slurm", "local", "debug")
    _check(
        e.slurm_cluster in clusters,
        f"executor.slurm_cluster: {e.slurm_cluster!r} is not one of null, slurm, local, debug",
    )


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def _attribute_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal right after a field), read from the source."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())  # type: ignore[attr-defined]
    return docs


def config_reference(cls: type = SweepConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, meaning) for every leaf key of the config, in declaration order."""
    rows: list[tuple[str, str, str]] = []
    docs = _attribute_docs(cls)
    default = cls()
    for f in dataclasses.fields(cls):
        value = getattr(default, f.name)
        if dataclasses.is_dataclass(value):
            rows += config_reference(type(value), f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", json.dumps(value), docs.get(f.name, "")))
    return rows
