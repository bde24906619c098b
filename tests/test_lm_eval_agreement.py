"""rankscope's evaluation agrees with lm-evaluation-harness 0.4.13, item by item.

The same tiny model (a 2-layer Llama with a byte-level BPE tokenizer, trained for a few
seconds on the fixture texts so its predictions differ between items) and the same items
(`TASKS["mmlu"]`, `TASKS["gsm8k"]` on tests/fixtures/data) go through both: the harness as
`simple_evaluate(HFLM(...))` on a task built from a config dict whose docs are our items,
with no request cache, and rankscope's `evaluate()`. MMLU letters (acc), MMLU option texts
(acc_norm) and GSM8K greedy generation (strict / flexible exact match) must give identical
per-item results. `build_tiny_lm` is also used by tests/test_evaluate.py and
benchmarks/eval_vs_lm_eval.py.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "data"
BATCH = 8


def fixture_texts(data_dir: Path = FIXTURES) -> list[str]:
    """Training text for the tiny model: MMLU test prompts with their answer letter (so
    it learns some answers and the letters become single tokens) and GSM8K train problems
    with their worked answers, three times (so it learns to write '#### N')."""
    from rankscope.config import DataConfig
    from rankscope.tasks import TASKS, TaskContext

    ctx = TaskContext(data=DataConfig(source="files", dir=str(data_dir)))
    with pytest.warns(UserWarning, match="MMLU subjects found"):
        mmlu = TASKS["mmlu"].items("test", ctx)
    gsm = TASKS["gsm8k"].items("train", ctx)
    return [f"{it.prompt} {it.completion}" for it in mmlu] + [
        f"{it.prompt} {it.completion}" for it in gsm for _ in range(3)
    ]


def build_tokenizer(texts: list[str], vocab: int = 1024) -> Any:
    """Byte-level BPE (like GPT-2/Llama-3) whose post-processor prepends <s>, as Llama's
    does, so the BOS handling of both evaluators is exercised, not sidestepped."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator(texts + [f"Answer: {c}" for c in "ABCDE"] * 50, trainer)
    bos = core.token_to_id("<s>")
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def build_tiny_lm(
    out: Path,
    texts: list[str],
    d: int = 64,
    layers: int = 2,
    steps: int = 150,
    seed: int = 0,
    lr: float = 3e-3,
) -> Path:
    """A LlamaForCausalLM + tokenizer saved as a normal HF directory; `steps` AdamW steps of
    next-token training on `texts` (0 = random init). Context 4096, so no fixture prompt is
    left-truncated by the harness (it truncates at the model's max_position_embeddings)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer(texts)
    torch.manual_seed(seed)
    conf = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=d,
        intermediate_size=2 * d,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(conf)
    flat = torch.tensor([t for ids in tok(texts)["input_ids"] for t in ids + [tok.eos_token_id]])
    chunks = flat[: len(flat) // 128 * 128].view(-1, 128)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = chunks[torch.randint(0, len(chunks), (16,), generator=gen)]
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny_lm"), fixture_texts())


def load(model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(
        model_dir
    )


def fixture_items(task: str, **data: Any) -> list:
    """The task's test items from the fixture files (DataConfig defaults, or `data`)."""
    import warnings

    from rankscope.config import DataConfig
    from rankscope.tasks import TASKS, TaskContext

    ctx = TaskContext(data=DataConfig(source="files", dir=str(FIXTURES), **data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "only 6 of 57 MMLU subjects found"
        return TASKS[task].items("test", ctx)


# ------------------------------------------------------------------ the harness side
def harness_mcq_config(name: str, items: list, norm: bool) -> dict[str, Any]:
    """A multiple_choice task whose docs are our items: context = our prompt; choices the
    letters (scored as ' A'.. by the default target_delimiter ' ', as lm-eval's mmlu) or,
    for acc_norm, the option texts (scored as ' ' + text, normalised by len(text))."""
    docs = [{"prompt": it.prompt, "choices": list(it.choices), "gold": it.gold} for it in items]
    return {
        "task": name,
        "custom_dataset": lambda **_: {"test": _dataset(docs)},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{prompt}}",
        "doc_to_choice": "{{choices}}" if norm else list("ABCDE"[: len(items[0].choices)]),
        "doc_to_target": "gold",
        "metric_list": [{"metric": m} for m in (["acc", "acc_norm"] if norm else ["acc"])],
    }


def harness_gsm8k_config(name: str, items: list, max_gen_toks: int) -> dict[str, Any]:
    """lm-eval's own gsm8k.yaml (stop strings, strict/flexible filters, exact_match with its
    regexes_to_ignore) with our items as docs and our gold as the target; no exemplars added:
    our prompts already hold theirs (data.gsm8k_shots; tests/tasks/test_gsm8k.py shows they
    are the text lm-eval builds)."""
    import lm_eval
    import yaml

    conf = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks/gsm8k/gsm8k.yaml").read_text())
    docs = [{"prompt": it.prompt, "answer": it.answer} for it in items]
    for key in ("tag", "dataset_path", "dataset_name", "training_split", "fewshot_split"):
        conf.pop(key, None)
    conf.update(
        task=name,
        custom_dataset=lambda **_: {"test": _dataset(docs)},
        num_fewshot=0,
        doc_to_text="{{prompt}}",
        doc_to_target="{{answer}}",
    )
    conf["generation_kwargs"]["max_gen_toks"] = max_gen_toks
    return conf


def _dataset(docs: list[dict]) -> Any:
    import datasets

    return datasets.Dataset.from_list(docs)


@functools.cache
def shared_task_manager() -> Any:
    """lm-eval's task index (a scan of its ~14k task YAML files, ~15-30 s), built once per
    test session: the tasks here are passed as objects, the index is never consulted."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def run_harness(
    model_dir: Path, configs: list[dict], batch_size: int = BATCH, task_manager: Any = None
) -> dict:
    """{task: {doc_id: {filter: sample}}} from simple_evaluate with log_samples; a fresh HFLM
    and no request cache, so nothing is reused between runs. Without a `task_manager` the
    session's shared index is used (`shared_task_manager`)."""
    from lm_eval import evaluator
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.models.huggingface import HFLM

    if task_manager is None:
        task_manager = shared_task_manager()
    lm = HFLM(pretrained=str(model_dir), device="cpu", batch_size=batch_size)
    res = evaluator.simple_evaluate(
        model=lm,
        tasks=[ConfigurableTask(config=c) for c in configs],
        log_samples=True,
        cache_requests=False,
        use_cache=None,
        task_manager=task_manager,
    )
    out: dict[str, dict[int, dict[str, dict]]] = {}
    for task, samples in res["samples"].items():
        for s in samples:
            out.setdefault(task, {}).setdefault(s["doc_id"], {})[s["filter"]] = s
    return out


# ------------------------------------------------------------------ MMLU
@pytest.fixture(scope="module")
def mmlu_both(tiny_lm: Path) -> tuple[list, dict, list, dict]:
    """(items, rankscope metrics, rankscope predictions, harness samples) for MMLU."""
    from rankscope.evaluate import evaluate
    from rankscope.tasks import TASKS

    items = fixture_items("mmlu")
    model, tok = load(tiny_lm)
    metrics, preds = evaluate(model, tok, TASKS["mmlu"], items, BATCH, 0, acc_norm=True)
    configs = [harness_mcq_config("rs_mmlu", items, False)]
    configs.append(harness_mcq_config("rs_mmlu_norm", items, True))
    return items, metrics, preds, run_harness(tiny_lm, configs)


def _lls(sample: dict) -> list[float]:
    return [r[0][0] for r in sample["resps"]]


def test_bos_handling_is_the_same(tiny_lm: Path):
    """Both sides start every sequence with exactly one BOS: the harness encodes context and
    context + continuation with the tokenizer's default special tokens, as prompting.encode
    does, and both then take the continuation as the whole's tokens after the context's."""
    from lm_eval.models.huggingface import HFLM

    from rankscope.prompting import encode

    _, tok = load(tiny_lm)
    lm = HFLM(pretrained=str(tiny_lm), device="cpu", batch_size=1)
    for it in fixture_items("mmlu")[:20]:
        ours = encode(tok, [it.prompt])[0]
        assert ours == lm.tok_encode(it.prompt)
        assert ours[0] == tok.bos_token_id and ours.count(tok.bos_token_id) == 1


def test_mmlu_acc_agrees_per_item(mmlu_both):
    items, metrics, preds, harness = mmlu_both
    samples = harness["rs_mmlu"]
    assert len(samples) == len(items) == len(preds)
    assert len({p["pred"] for p in preds}) > 1, "a model that always says one letter proves little"
    for i, (it, p) in enumerate(zip(items, preds, strict=True)):
        s = samples[i]["none"]
        assert s["arguments"][0][0] == it.prompt
        assert _lls(s) == pytest.approx(p["detail"]["logprobs"], abs=1e-4)
        assert p["pred"] == "ABCDE"[int(_argmax(_lls(s)))], it.id
        assert p["correct"] == bool(s["acc"]), it.id
    harness_acc = sum(samples[i]["none"]["acc"] for i in samples) / len(samples)
    assert metrics["acc"][0] == pytest.approx(harness_acc, abs=1e-12)


def test_mmlu_acc_norm_agrees_per_item(mmlu_both):
    items, metrics, preds, harness = mmlu_both
    samples = harness["rs_mmlu_norm"]
    assert len({p["detail"]["pred_norm"] for p in preds}) > 1
    for i, (it, p) in enumerate(zip(items, preds, strict=True)):
        s = samples[i]["none"]
        assert [a[1] for a in s["arguments"]] == [" " + c for c in it.choices]
        assert _lls(s) == pytest.approx(p["detail"]["option_logprobs"], abs=1e-4), it.id
        assert p["detail"]["correct_norm"] == bool(s["acc_norm"]), it.id
    harness_norm = sum(samples[i]["none"]["acc_norm"] for i in samples) / len(samples)
    assert metrics["acc_norm"][0] == pytest.approx(harness_norm, abs=1e-12)


def test_mmlu_group_scores_are_harness_subject_scores(mmlu_both):
    """acc|<subject> = the harness's accuracy on that subject's items; the task-level acc is
    their size-weighted mean (lm-eval's MMLU group aggregation)."""
    items, metrics, _, harness = mmlu_both
    by_subject: dict[str, list[float]] = {}
    for i, it in enumerate(items):
        by_subject.setdefault(it.group, []).append(harness["rs_mmlu"][i]["none"]["acc"])
    assert len(by_subject) == 6
    for subject, accs in by_subject.items():
        value, _, n = metrics[f"acc|{subject}"]
        assert n == len(accs) and value == pytest.approx(sum(accs) / len(accs), abs=1e-12)
    weighted = sum(metrics[f"acc|{s}"][0] * metrics[f"acc|{s}"][2] for s in by_subject)
    assert metrics["acc"][0] == pytest.approx(weighted / len(items), abs=1e-12)


def _argmax(xs: list[float]) -> int:
    return max(range(len(xs)), key=xs.__getitem__)


def test_mmlu_prompt_is_lm_eval_default_mmlu_prompt():
    """TASKS['mmlu'] prompts equal the harness's own `mmlu` rendering: its per-subject
    description plus its default template, applied to the raw CSV rows."""
    import lm_eval
    import yaml
    from lm_eval.utils import apply_template

    root = Path(lm_eval.__file__).parent / "tasks/mmlu/default"
    template = yaml.safe_load((root / "_default_template_yaml").read_text())["doc_to_text"]
    items = {it.id: it for it in fixture_items("mmlu")}
    checked = 0
    for path in sorted((FIXTURES / "mmlu/test").glob("*_test.csv")):
        subject = path.name.removesuffix("_test.csv")
        description = yaml.safe_load((root / f"mmlu_{subject}.yaml").read_text())["description"]
        with path.open(encoding="utf-8", newline="") as f:
            for n, (question, *choices, _) in enumerate(csv.reader(f)):
                doc = {"question": question, "choices": [c.replace("\ufeff", "") for c in choices]}
                doc["question"] = doc["question"].replace("\ufeff", "")
                ours = items[f"mmlu/{subject}/test/{n}"].prompt
                assert ours == description + apply_template(template, doc)
                checked += 1
    assert checked == len(items)


# ------------------------------------------------------------------ MathQA, MedMCQA acc_norm
def harness_own_config(rel: str, name: str, splits: dict[str, list[dict]]) -> dict[str, Any]:
    """lm-eval's own task config (its prompt, choices, target, metrics; `!function`s
    resolved), zero-shot, reading `splits` (raw rows) instead of the hub."""
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    conf = load_yaml(Path(lm_eval.__file__).parent / "tasks" / rel)
    for key in ("tag", "dataset_path", "dataset_name"):
        conf.pop(key, None)
    conf.update(
        task=name,
        custom_dataset=lambda **_: {k: _dataset(v) for k, v in splits.items()},
        num_fewshot=0,
    )
    return conf


def mathqa_lm_eval_parses(row: dict) -> bool:
    """Whether lm-eval's mathqa option regex splits the row right: not for list-encoded
    options (it keeps a quote) nor options holding ' , ' (it cuts them there)."""
    return not row["options"].startswith("[") and row["options"].count(" , ") == 4


def medmcqa_doc(row: dict) -> dict:
    """A fixture (reduced-layout) MedMCQA row in the hub's layout, which lm-eval reads."""
    opts = dict(zip(("opa", "opb", "opc", "opd"), (c[3:] for c in row["choices"]), strict=True))
    return {"question": row["question"], **opts, "cop": row["answer"]}


@pytest.fixture(scope="module")
def own_prompt_both(tiny_lm: Path) -> dict[str, tuple[list, dict, list, dict]]:
    """{task: (items, rankscope metrics, predictions, harness samples)} for MathQA and MedMCQA,
    the harness running lm-eval's own task configs on the raw fixture rows."""
    import json

    from rankscope.evaluate import evaluate
    from rankscope.tasks import TASKS

    test = json.loads((FIXTURES / "mathqa/test.json").read_text())
    keep = [i for i, r in enumerate(test) if mathqa_lm_eval_parses(r)]
    math_rows = [test[i] for i in keep]
    dev = json.loads((FIXTURES / "mathqa/dev.json").read_text())
    med = [json.loads(line) for line in (FIXTURES / "medmcqa/validation.jsonl").open()]
    med_items = fixture_items("medmcqa")
    med_docs = [medmcqa_doc(med[int(it.id.rsplit("/", 1)[1])]) for it in med_items]
    configs = [
        harness_own_config(
            "mathqa/mathqa.yaml",
            "rs_mathqa",
            {"train": dev, "validation": math_rows, "test": math_rows},
        ),
        harness_own_config(
            "medmcqa/medmcqa.yaml", "rs_medmcqa", {"train": med_docs, "validation": med_docs}
        ),
    ]
    harness = run_harness(tiny_lm, configs)
    model, tok = load(tiny_lm)
    out = {}
    for task, items in (
        ("mathqa", [fixture_items("mathqa")[i] for i in keep]),
        ("medmcqa", med_items),
    ):
        metrics, preds = evaluate(model, tok, TASKS[task], items, BATCH, 0, acc_norm=True)
        out[task] = (items, metrics, preds, harness[f"rs_{task}"])
    return out


@pytest.mark.parametrize("task", ["mathqa", "medmcqa"])
def test_acc_norm_agrees_with_lm_evals_own_task(own_prompt_both, task):
    """acc_norm of MathQA and MedMCQA equals lm-eval's `mathqa` / `medmcqa` acc_norm item by
    item: the same context (its doc_to_text, not our lettered prompt), continuations (MathQA:
    ' ' + option text; MedMCQA: ' A'..' D'), log-likelihoods and verdicts. MedMCQA's choices
    are one character each, so there the harness's acc_norm equals its acc."""
    items, metrics, preds, samples = own_prompt_both[task]
    assert len(samples) == len(items) >= 15
    assert len({p["detail"]["pred_norm"] for p in preds}) > 1
    for i, (it, p) in enumerate(zip(items, preds, strict=True)):
        s = samples[i]["none"]
        assert [a[0] for a in s["arguments"]] == [it.norm_prompt] * len(it.choices), it.id
        conts = it.norm_choices or it.choices
        assert [a[1] for a in s["arguments"]] == [" " + c for c in conts], it.id
        assert _lls(s) == pytest.approx(p["detail"]["option_logprobs"], abs=1e-4), it.id
        assert p["detail"]["correct_norm"] == bool(s["acc_norm"]), it.id
        if task == "medmcqa":
            assert s["acc"] == s["acc_norm"]
    harness_norm = sum(samples[i]["none"]["acc_norm"] for i in samples) / len(samples)
    assert metrics["acc_norm"][0] == pytest.approx(harness_norm, abs=1e-12)


# ------------------------------------------------------------------ GSM8K
def _gsm8k_pair(tiny_lm: Path, items: list, max_new: int) -> tuple[list, dict]:
    from rankscope.evaluate import evaluate
    from rankscope.tasks import TASKS

    model, tok = load(tiny_lm)
    _, preds = evaluate(model, tok, TASKS["gsm8k"], items, BATCH, max_new)
    harness = run_harness(tiny_lm, [harness_gsm8k_config("rs_gsm8k", items, max_new)])
    return preds, harness["rs_gsm8k"]


@pytest.mark.slow
def test_gsm8k_generation_agrees_per_item(tiny_lm: Path):
    """Same greedy text, and the same strict and flexible verdicts, item by item. The model
    is far from solving GSM8K, so golds are replaced by the number rankscope extracted in a
    first pass (strict where there is one, else flexible for every other item): agreement
    on *correct* answers is tested too, as the harness must find those items correct."""
    from dataclasses import replace

    from rankscope.evaluate import generate
    from rankscope.tasks import TASKS

    max_new = 64
    items = fixture_items("gsm8k")
    model, tok = load(tiny_lm)
    texts = generate(model, tok, items, BATCH, max_new, TASKS["gsm8k"].stop)
    extracted = [TASKS["gsm8k"].extract(t) for t in texts]
    items = [
        replace(it, answer=ext["strict"] or (ext["flexible"] if i % 2 else None) or it.answer)
        for i, (it, ext) in enumerate(zip(items, extracted, strict=True))
    ]
    preds, samples = _gsm8k_pair(tiny_lm, items, max_new)
    assert [p["detail"]["text"] for p in preds] == texts  # deterministic
    for i, (it, p) in enumerate(zip(items, preds, strict=True)):
        strict, flexible = samples[i]["strict-match"], samples[i]["flexible-extract"]
        assert strict["resps"][0][0].strip() == p["detail"]["text"], it.id
        assert p["correct"] == bool(strict["exact_match"]), it.id
        assert p["detail"]["correct_flexible"] == bool(flexible["exact_match"]), it.id
    # both verdicts were exercised both ways, not only "wrong" everywhere
    assert 1 <= sum(p["correct"] for p in preds) <= len(preds) - 3
    assert 3 <= sum(p["detail"]["correct_flexible"] for p in preds) <= len(preds) - 3
