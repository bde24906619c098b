"""GSM8K: real fixture rows, lm-eval's prompt, stop strings, extraction and scoring."""

from __future__ import annotations

import json
import warnings

import pytest
from task_helpers import FIXTURES, lm_eval_yaml

from rankscope.config import DataConfig
from rankscope.errors import ConfigError, DataError
from rankscope.tasks import TASKS
from rankscope.tasks.base import check_no_overlap
from rankscope.tasks.gsm8k import extract, normalize, setting
from rankscope.tasks.sources import SKIPPED

TASK = TASKS["gsm8k"]


def raw_rows(split: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / "gsm8k" / f"{split}.jsonl").open()]


def test_items_from_fixture_rows(ctx):
    train, test = TASK.load("train", ctx()), TASK.load("test", ctx())
    rows = raw_rows("train")
    assert len(train) == len(rows) == 43 and len(test) == 33
    first = train[0]
    assert first.id == "gsm8k/train/0"
    assert first.prompt == f"Question: {rows[0]['question']}\nAnswer:"
    assert first.completion == rows[0]["answer"] and first.answer == "72"
    assert TASK.kind == "gen" and not first.choices
    check_no_overlap("gsm8k", train, "gsm8k", test)


def test_thousands_separators_in_gold_answers(ctx):
    items = TASK.load("train", ctx()) + TASK.load("test", ctx())
    with_commas = [it for it in items if "," in it.completion.rsplit("####", 1)[1]]
    assert len(with_commas) == 6  # the fixture keeps 3 such rows per split
    for it in with_commas:
        final = it.completion.rsplit("####", 1)[1].strip()
        assert it.answer == final.replace(",", "") and it.answer.isdigit()


def test_gold_answers_equal_the_harness_reference(ctx):
    """Item.answer is what lm-eval's exact_match compares a prediction against."""
    from lm_eval.api.metrics import exact_match_hf_evaluate

    metric = {k: v for k, v in lm_eval_yaml("gsm8k/gsm8k.yaml")["metric_list"][0].items()}
    kwargs = {k: metric[k] for k in ("regexes_to_ignore", "ignore_case", "ignore_punctuation")}
    for it, row in zip(TASK.load("test", ctx()), raw_rows("test"), strict=True):
        score = exact_match_hf_evaluate([it.answer], [row["answer"]], **kwargs)["exact_match"]
        assert score == 1.0, it.id


@pytest.mark.parametrize(
    "text, strict, flexible",
    [
        ("so 1,000 + 80 = 1,080\n#### 1,080", "1080", "1080"),
        ("She pays $1,080.00 in total.", None, "1080.00"),  # the harness does not parse numbers
        ("The loss is 5 dollars.\n#### -5", "-5", "-5"),
        ("I do not know.", None, None),
        ("The answer is 18.", None, "18"),
        ("#### 18.\nQuestion", "18", "18"),
        ("#### 7 then 12 more, 19 in all", "7", "19"),
        ("x = 3\n#### 4\n#### 5", "4", "5"),  # strict takes the first '#### N'
    ],
)
def test_extract_edge_cases(text, strict, flexible):
    assert extract(text) == {"strict": strict, "flexible": flexible}


GENERATIONS = [
    "Natalia sold 48/2 = 24 clips in May.\n#### 72",
    "She earned $10.",
    "#### 1,080",
    "the answer is $1,080.00",
    "#### -3.",
    "No idea",
    "It is 72. Then 10 more is 82",
    "#### 10\n\nQuestion: next",
    "5,000 and 10,000 so 15,000.",
]


def test_per_item_results_equal_lm_eval_filters_and_metric(ctx):
    """Our strict/flexible correctness equals the harness's; filters read from its yaml."""
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    cfg = lm_eval_yaml("gsm8k/gsm8k.yaml")
    metric = cfg["metric_list"][0]
    kwargs = {k: metric[k] for k in ("regexes_to_ignore", "ignore_case", "ignore_punctuation")}
    filters = {f["name"]: f["filter"][0] for f in cfg["filter_list"]}
    items = TASK.load("test", ctx()) + TASK.load("train", ctx())
    golds = [it for it in items if it.answer in ("72", "10", "1080", "15000", "82")]
    assert len({it.answer for it in golds}) >= 3
    right = 0
    for name, key in (("strict-match", "strict"), ("flexible-extract", "flexible")):
        f = filters[name]
        picked = RegexFilter(f["regex_pattern"], f.get("group_select", 0)).apply(
            [[g] for g in GENERATIONS], []
        )
        for it in golds:
            for gen, (pred,) in zip(GENERATIONS, picked, strict=True):
                harness = exact_match_hf_evaluate([pred], [it.completion], **kwargs)
                mine = extract(gen)[key] == it.answer
                assert mine == bool(harness["exact_match"]), (name, gen, it.answer)
                right += mine
    assert right > 0  # some generations are right, so the comparison is not all-False


def test_stop_strings_are_lm_evals_until():
    assert TASK.stop == tuple(lm_eval_yaml("gsm8k/gsm8k.yaml")["generation_kwargs"]["until"])
    assert TASK.extract is extract


@pytest.mark.parametrize("shots", [0, 3])
def test_prompts_equal_lm_eval_gsm8k(ctx, lm_eval_task, shots):
    """Same text as the harness builds (its first_n sampler; its default samples randomly)."""
    task = lm_eval_task(
        "gsm8k/gsm8k.yaml",
        {"train": raw_rows("train"), "test": raw_rows("test")},
        fewshot_config={"sampler": "first_n"},
    )
    ours = TASK.load("test", ctx(gsm8k_shots=shots))
    theirs = [task.fewshot_context(doc, shots) for doc in task.test_docs()]
    assert [it.prompt for it in ours] == theirs
    assert [" " + it.completion for it in TASK.load("train", ctx())][:3] == [
        task.config.target_delimiter + task.doc_to_target(d) for d in task.training_docs()
    ][:3]


def test_default_is_lm_evals_five_shot_setting(ctx, lm_eval_task):
    """By default GSM8K is scored as lm-eval's gsm8k is: num_fewshot from its yaml (5), the
    exemplars solved train items (old: zero-shot, so strict match measured the format)."""
    shots = lm_eval_yaml("gsm8k/gsm8k.yaml")["num_fewshot"]
    assert shots == 5 == DataConfig().gsm8k_shots
    task = lm_eval_task(
        "gsm8k/gsm8k.yaml",
        {"train": raw_rows("train"), "test": raw_rows("test")},
        fewshot_config={"sampler": "first_n"},
    )
    ours = TASK.load("test", ctx())
    assert [it.prompt for it in ours] == [task.fewshot_context(d, shots) for d in task.test_docs()]
    assert ours[0].prompt.count("Question: ") == 6 and ours[0].prompt.count("\n#### ") == 5


def test_exemplars_are_train_items_and_training_stays_zero_shot(ctx):
    train, test = TASK.load("train", ctx()), TASK.load("test", ctx())
    assert train == TASK.load("train", ctx(gsm8k_shots=0))  # training prompts: zero-shot
    head = "".join(f"{it.prompt} {it.completion}\n\n" for it in train[:5])
    zero = TASK.load("test", ctx(gsm8k_shots=0))
    assert [it.prompt for it in test] == [head + it.prompt for it in zero]
    check_no_overlap("gsm8k", train, "gsm8k", zero)  # no exemplar is a test item
    # data.shots is the other tasks' setting; GSM8K follows data.gsm8k_shots only
    assert TASK.load("test", ctx(shots=2, gsm8k_shots=0)) == zero
    with pytest.raises(ConfigError, match="data.gsm8k_shots: 50 few-shot exemplars asked for"):
        TASK.load("test", ctx(gsm8k_shots=50))


SCORING = "strict '#### N' and flexible last-number match"


@pytest.mark.parametrize(
    "shots, text",
    [(5, f"5-shot, exemplars = first 5 train items; {SCORING}"), (0, f"zero-shot; {SCORING}")],
)
def test_setting_names_the_scoring(shots, text):
    assert setting(DataConfig(gsm8k_shots=shots)) == text


def test_leak_check_compares_zero_shot_prompts(tmp_path):
    """Test problems copied from train are caught, and only their training copies dropped,
    although the default 5-shot eval prompts wrap them in exemplars."""
    import shutil

    from rankscope.config import load_config
    from rankscope.sweep import Sweep

    data = tmp_path / "data"
    shutil.copytree(FIXTURES, data)
    test = data / "gsm8k" / "test.jsonl"
    leaked = (data / "gsm8k" / "train.jsonl").read_text().splitlines()[:10]
    test.write_text(test.read_text() + "".join(line + "\n" for line in leaked))
    sets = ["data.source=files", f"data.dir={data}", "tasks.train=[gsm8k]"]
    sets += ["tasks.eval=[gsm8k, mmlu]", "tasks.retention=mmlu", f"output_dir={tmp_path / 'out'}"]
    sweep = Sweep(load_config(None, sets))
    assert sweep.cfg.data.gsm8k_shots == 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "only 6 of 57 MMLU subjects found"
        found = sweep.check_leaks()
    assert 1 <= sum(o.dropped for o in found.overlaps if o.eval_task == "gsm8k") <= 10
    copied = {json.loads(line)["question"] for line in leaked}
    kept = sweep.items("gsm8k", "train")
    assert kept and not any(
        it.prompt[len("Question: ") : -len("\nAnswer:")] in copied for it in kept
    )


def test_hub_gives_the_same_items(ctx, fake_hub):
    calls = fake_hub(
        {
            ("openai/gsm8k", "main", "train"): raw_rows("train"),
            ("openai/gsm8k", "main", "test"): raw_rows("test"),
        }
    )
    for split in ("train", "test"):
        assert TASK.load(split, ctx(source="hub", dir=None)) == TASK.load(split, ctx())
    assert ("openai/gsm8k", "main", "test") in calls


def write(tmp_path, lines: list[str], split: str = "test"):
    folder = tmp_path / "gsm8k"
    folder.mkdir(exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(line + "\n" for line in lines))
    return folder / f"{split}.jsonl"


GOOD = json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"})


@pytest.mark.parametrize(
    "bad, why",
    [
        ('{"question": "1+1?", "answer": "2"', "malformed JSON"),
        (json.dumps({"question": "1+1?"}), "missing field 'answer'"),
        (json.dumps({"question": "1+1?", "answer": "it is 2"}), "no final '#### <number>'"),
        (json.dumps({"question": 3, "answer": "#### 3"}), "field 'question' must be str"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_rows_name_file_and_line(ctx, tmp_path, bad, why):
    path = write(tmp_path, [GOOD, "", bad])
    with pytest.raises(DataError, match=why) as e:
        TASK.load("test", ctx(dir=str(tmp_path)))
    assert f"{path}:3:" in str(e.value)


def test_skip_mode_counts_and_warns(ctx, tmp_path):
    path = write(tmp_path, [GOOD, "{oops", GOOD, json.dumps({"answer": "#### 1"})])
    with pytest.warns(UserWarning) as rec:
        items = TASK.load("test", ctx(dir=str(tmp_path), on_bad_row="skip", gsm8k_shots=0))
    assert [it.id for it in items] == ["gsm8k/test/0", "gsm8k/test/2"]
    assert SKIPPED[str(path)] == 2
    assert [str(w.message) for w in rec] == [
        f"{path}: skipped 2 malformed row(s) (first at line 2)"
    ]


def test_empty_and_missing_files(ctx, tmp_path):
    path = write(tmp_path, ["", "  "])
    with pytest.raises(DataError, match="file is empty") as e:
        TASK.load("test", ctx(dir=str(tmp_path)))
    assert str(path) in str(e.value)
    with pytest.raises(DataError, match=r"gsm8k/train.jsonl: file not found; data.dir must hold"):
        TASK.load("train", ctx(dir=str(tmp_path)))


def test_normalize_mirrors_regexes_to_ignore():
    assert normalize("Steps...\n#### 1,234") == "1234"
    assert normalize("$5.") == "5"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert normalize("ABC") == "abc"  # ignore_case
