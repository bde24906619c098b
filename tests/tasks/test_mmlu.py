"""MMLU: the real CSV quirks, lm-eval's exact prompt, categories, the retention split."""

from __future__ import annotations

import csv

import pytest
from task_helpers import FIXTURES, LM_EVAL_TASKS, lm_eval_yaml

from rankscope.errors import ConfigError, DataError
from rankscope.tasks import TASKS
from rankscope.tasks.base import check_no_overlap
from rankscope.tasks.mmlu import CATEGORIES, SUBJECTS, domain_subjects, expand, retention_subjects
from rankscope.tasks.sources import SKIPPED, read_csv_rows

TASK = TASKS["mmlu"]
FIXTURE_SUBJECTS = sorted(p.name[:-9] for p in (FIXTURES / "mmlu" / "test").glob("*_test.csv"))
pytestmark = pytest.mark.filterwarnings("ignore:.*MMLU subjects found:UserWarning")


def hub_rows(subject: str, split_dir: str) -> list[dict]:
    """Fixture CSV rows in the cais/mmlu schema (answer as an int index)."""
    path = FIXTURES / "mmlu" / split_dir / f"{subject}_{split_dir}.csv"
    return [
        {"question": f[0], "subject": subject, "choices": f[1:5], "answer": "ABCD".index(f[5])}
        for f in (r.raw for r in read_csv_rows(path))
    ]


def test_fixture_subjects_load_with_groups_and_ids(ctx):
    items = TASK.load("test", ctx())
    assert len(FIXTURE_SUBJECTS) == 6
    by_group = {s: [it for it in items if it.group == s] for s in FIXTURE_SUBJECTS}
    assert {s: len(v) for s, v in by_group.items()} == {
        s: 50 if s == "college_medicine" else 12 for s in FIXTURE_SUBJECTS
    }
    assert by_group["anatomy"][7].id == "mmlu/anatomy/test/7"
    for it in items:
        rows = hub_rows(it.group, "test")
        row = rows[int(it.id.rsplit("/", 1)[1])]
        assert it.choices == tuple(row["choices"]) and it.gold == row["answer"]
        assert it.completion == "ABCD"[it.gold]


def test_bom_inside_a_field_and_multiline_questions(ctx):
    items = {it.id: it for it in TASK.load("test", ctx(mmlu_subjects=["college_medicine"]))}
    assert not any(
        "\ufeff" in it.prompt or "\ufeff" in "".join(it.choices) for it in items.values()
    )
    bom_item = items["mmlu/college_medicine/test/49"]
    assert "16amu)?\n\nThe unbalanced reaction" in bom_item.prompt
    path = FIXTURES / "mmlu" / "test" / "college_medicine_test.csv"
    with path.open(encoding="utf-8-sig", newline="") as f:  # an independent parse
        multiline = [i for i, r in enumerate(csv.reader(f)) if "\n" in r[0].strip()]
    assert len(multiline) >= 2
    for i in multiline:  # the question keeps its inner newlines, stripped only at its ends
        it = items[f"mmlu/college_medicine/test/{i}"]
        question = it.prompt.split("about college medicine.\n\n", 1)[1].rsplit("\nA. ", 1)[0]
        assert "\n" in question and question == question.strip()


@pytest.mark.parametrize("shots", [0, 2, 5])
def test_prompts_equal_lm_eval_mmlu(ctx, lm_eval_task, shots):
    ours = TASK.load("test", ctx(shots=shots))
    for subject in FIXTURE_SUBJECTS:
        task = lm_eval_task(
            f"mmlu/default/mmlu_{subject}.yaml",
            {"test": hub_rows(subject, "test"), "dev": hub_rows(subject, "dev")},
        )
        theirs = [task.fewshot_context(doc, shots) for doc in task.test_docs()]
        assert [it.prompt for it in ours if it.group == subject] == theirs, subject
    assert ours[0].prompt.startswith("The following are multiple choice questions (with answers)")


def test_categories_are_lm_evals():
    tags = {}
    for path in (LM_EVAL_TASKS / "mmlu" / "default").glob("mmlu_*.yaml"):
        cfg = lm_eval_yaml(f"mmlu/default/{path.name}")
        tags[cfg["dataset_name"]] = cfg["tag"].removeprefix("mmlu_").removesuffix("_tasks")
    assert tags == SUBJECTS and len(SUBJECTS) == 57
    assert sorted(CATEGORIES) == ["humanities", "other", "social_sciences", "stem"]


def test_expand_names_and_categories():
    assert expand(["stem", "anatomy", "marketing"], "mmlu_subjects") == sorted(
        {*CATEGORIES["stem"], "marketing"}
    )
    with pytest.raises(
        ConfigError, match=r"data.mmlu_subjects: unknown .* 'anatomyy' \(did you mean 'anatomy'"
    ):
        expand(["anatomyy"], "mmlu_subjects")
    with pytest.raises(ConfigError, match="did you mean 'humanities'"):
        expand(["humanity"], "mmlu_train_subjects")


def test_retention_split_excludes_the_training_subjects(ctx):
    c = ctx(train_tasks=("mmlu", "gsm8k"), mmlu_train_subjects=["stem"])
    train, test = TASK.load("train", c), TASK.load("test", c)
    val = TASK.load("val", c)  # MMLU's own val rows of the training subjects: lr is chosen here
    assert {it.group for it in train} == {it.group for it in val} == {"abstract_algebra", "anatomy"}
    assert {it.group for it in test} == set(FIXTURE_SUBJECTS) - {"abstract_algebra", "anatomy"}
    assert len(train) == 2 * 12 and len(val) == 2 * 4  # test rows train, val rows validate
    assert {it.id.split("/")[2] for it in train} == {"test"}
    assert {it.id.split("/")[2] for it in val} == {"val"}
    check_no_overlap("mmlu", train, "mmlu", test)
    check_no_overlap("mmlu", train, "mmlu", val)


def test_retention_leaves_out_the_domains_of_the_training_tasks(ctx):
    """A MedMCQA-trained run is in-domain on anatomy and college_medicine, a CaseHOLD-trained
    one on professional_law: none of them may count as retention when those tasks train."""
    everything = {it.group for it in TASK.load("test", ctx())}
    assert everything == set(FIXTURE_SUBJECTS)  # nothing trains: every subject measures
    c = ctx(train_tasks=("medmcqa", "legalmcq"))
    kept = {it.group for it in TASK.load("test", c)}
    assert kept == {"abstract_algebra", "high_school_geography", "marketing"}
    assert retention_subjects(c) == sorted(kept)
    assert {it.group for it in TASK.load("test", ctx(train_tasks=("gsm8k",)))} == set(
        FIXTURE_SUBJECTS
    )  # no fixture subject is in GSM8K's domain (elementary / high-school mathematics)
    assert domain_subjects(("medmcqa", "toy-med"))["clinical_knowledge"] == "medmcqa"
    with pytest.raises(
        ConfigError,
        match=r"data.mmlu_subjects: professional_law is in the domain of training task "
        r"'legalmcq'",
    ):
        TASK.load(
            "test", ctx(train_tasks=("legalmcq",), mmlu_subjects=["marketing", "professional_law"])
        )


def test_training_on_mmlu_needs_disjoint_training_subjects(ctx):
    with pytest.raises(
        ConfigError, match="data.mmlu_train_subjects: empty, but mmlu is a training"
    ):
        TASK.load("test", ctx(train_tasks=("mmlu",)))
    with pytest.raises(ConfigError, match="overlap in anatomy, college_medicine;"):
        TASK.load(
            "test",
            ctx(
                train_tasks=("mmlu",),
                mmlu_subjects=["anatomy", "other"],
                mmlu_train_subjects=["anatomy", "college_medicine"],
            ),
        )
    # not trained on: the subjects may be named freely
    assert TASK.load("test", ctx(mmlu_subjects=["anatomy"], mmlu_train_subjects=["anatomy"]))


def test_partial_file_copy_warns_and_evaluates_what_is_there(ctx):
    with pytest.warns(UserWarning, match="only 6 of 57 MMLU subjects found"):
        items = TASK.load("test", ctx())
    assert {it.group for it in items} == set(FIXTURE_SUBJECTS)


def test_few_shot_uses_the_subjects_dev_rows_in_order(ctx):
    items = TASK.load("test", ctx(mmlu_subjects=["marketing"], shots=5))
    dev = hub_rows("marketing", "dev")
    shots = items[0].prompt.split("\n\n")[1:-1]
    assert [s.split("\nA. ")[0] for s in shots] == [r["question"].strip() for r in dev]
    assert [s[-1] for s in shots] == ["ABCD"[r["answer"]] for r in dev]
    with pytest.raises(ConfigError, match="data.shots: 6 exemplars asked for, but MMLU marketing"):
        TASK.load("test", ctx(mmlu_subjects=["marketing"], shots=6))


def test_hub_gives_the_same_items(ctx, fake_hub):
    def table(split_dir: str) -> list[dict]:
        return [r for s in FIXTURE_SUBJECTS for r in hub_rows(s, split_dir)]

    calls = fake_hub(
        {
            ("cais/mmlu", "all", "test"): table("test"),
            ("cais/mmlu", "all", "validation"): table("val"),
            ("cais/mmlu", "all", "dev"): table("dev"),
        }
    )
    subjects = dict(mmlu_subjects=FIXTURE_SUBJECTS[2:], mmlu_train_subjects=FIXTURE_SUBJECTS[:2])
    for split in ("train", "val", "test"):
        for shots in (0, 3):
            hub = TASK.load(split, ctx(("mmlu",), source="hub", dir=None, shots=shots, **subjects))
            files = TASK.load(split, ctx(("mmlu",), shots=shots, **subjects))
            assert hub == files and hub
    assert {c[2] for c in calls} == {"test", "validation", "dev"}


def copy_subject(tmp_path, subject: str = "anatomy") -> None:
    for split_dir in ("dev", "val", "test"):
        folder = tmp_path / "mmlu" / split_dir
        folder.mkdir(parents=True, exist_ok=True)
        src = FIXTURES / "mmlu" / split_dir / f"{subject}_{split_dir}.csv"
        (folder / src.name).write_bytes(src.read_bytes())


@pytest.mark.parametrize(
    "record, why",
    [
        ('"What?",a,b,c,d\n', "expected 6 columns .question, A, B, C, D, answer letter., got 5"),
        ('"What?",a,b,c,d,E\n', "answer letter must be one of A, B, C, D, got 'E'"),
        ('"What?\nReally?",a,b,c,d,A,x\n', "got 7"),
    ],
)
def test_bad_csv_rows_name_file_and_line(ctx, tmp_path, record, why):
    copy_subject(tmp_path)
    path = tmp_path / "mmlu" / "test" / "anatomy_test.csv"
    n_lines = path.read_text().count("\n")
    with path.open("a") as f:
        f.write(record)
    with pytest.raises(DataError, match=why) as e:
        TASK.load("test", ctx(dir=str(tmp_path), mmlu_subjects=["anatomy"]))
    assert f"{path}:{n_lines + 1}:" in str(e.value)
    with pytest.warns(UserWarning, match=f"{path}: skipped 1 malformed row"):
        items = TASK.load(
            "test", ctx(dir=str(tmp_path), mmlu_subjects=["anatomy"], on_bad_row="skip")
        )
    assert len(items) == 12 and SKIPPED[str(path)] == 1


def test_missing_empty_and_unknown_files(ctx, tmp_path):
    copy_subject(tmp_path)
    with pytest.raises(
        DataError, match=r"astronomy_test.csv: file not found; data.dir must hold mmlu/"
    ):
        TASK.load("test", ctx(dir=str(tmp_path), mmlu_subjects=["astronomy"]))
    (tmp_path / "mmlu" / "test" / "anatomy_test.csv").write_text("")
    with pytest.raises(DataError, match="anatomy_test.csv: file is empty"):
        TASK.load("test", ctx(dir=str(tmp_path), mmlu_subjects=["anatomy"]))
    (tmp_path / "mmlu" / "test" / "cooking_test.csv").write_text('"Q",a,b,c,d,A\n')
    with pytest.raises(DataError, match="cooking_test.csv: not one of the 57 MMLU subjects"):
        TASK.load("test", ctx(dir=str(tmp_path)))
    with pytest.raises(DataError, match="data.dir does not exist"):
        TASK.load("test", ctx(dir=str(tmp_path / "nowhere")))
