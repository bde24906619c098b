"""MMLU (57 subjects, 4-option MCQ): the retention probe, prompted exactly like lm-eval's `mmlu`.

Prompt = lm-eval's default mmlu task: the description "The following are multiple choice
questions (with answers) about {subject}.\\n\\n", then (few-shot) the subject's first k dev
rows each answered " {letter}\\n\\n", then `question.strip()`, the lettered options and
"Answer:". Every item carries `group = subject` for per-subject and size-weighted scores.

Splits. test: MMLU's test rows of the evaluated subjects = `data.mmlu_subjects`, or when that
is empty every subject that no training task of the sweep covers: not in
`data.mmlu_train_subjects` and not in the `mmlu_domain` of a training task (MedMCQA's
clinical_knowledge, CaseHOLD's professional_law ...). Naming such a subject in
`data.mmlu_subjects` is refused. train (only when mmlu is trained
on): the test rows of `data.mmlu_train_subjects` (val: their val rows, where lr is
chosen), which must not overlap the evaluated subjects. Both settings take subject names or
the categories stem, humanities, social_sciences, other (lm-eval's mapping).

Sources: `cais/mmlu` config `all` (splits dev, validation, test), or header-less CSV files
`mmlu/{dev,val,test}/<subject>_<split>.csv`; with files, "every subject" means the subjects
found under mmlu/test/. A stray BOM inside a field (test/college_medicine_test.csv) is
removed from both sources.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

from rankscope.errors import ConfigError, DataError, did_you_mean
from rankscope.tasks.base import LETTERS, MMLU_DOMAINS, Item, Task, TaskContext
from rankscope.tasks.mcq import mcq_block, mcq_item
from rankscope.tasks.sources import (
    Row,
    RowError,
    data_config,
    data_file,
    hub_label,
    hub_rows,
    need,
    parse_rows,
    read_csv_rows,
)

HUB = ("cais/mmlu", "all")
HUB_SPLIT = {"dev": "dev", "val": "validation", "test": "test"}
LAYOUT = "mmlu/{dev,val,test}/<subject>_<split>.csv (no header; question, A, B, C, D, letter)"

CATEGORIES: dict[str, tuple[str, ...]] = {
    "stem": (
        "abstract_algebra anatomy astronomy college_biology college_chemistry "
        "college_computer_science college_mathematics college_physics computer_security "
        "conceptual_physics electrical_engineering elementary_mathematics high_school_biology "
        "high_school_chemistry high_school_computer_science high_school_mathematics "
        "high_school_physics high_school_statistics machine_learning"
    ).split(),
    "humanities": (
        "formal_logic high_school_european_history high_school_us_history "
        "high_school_world_history international_law jurisprudence logical_fallacies "
        "moral_disputes moral_scenarios philosophy prehistory professional_law world_religions"
    ).split(),
    "social_sciences": (
        "econometrics high_school_geography high_school_government_and_politics "
        "high_school_macroeconomics high_school_microeconomics high_school_psychology "
        "human_sexuality professional_psychology public_relations security_studies sociology "
        "us_foreign_policy"
    ).split(),
    "other": (
        "business_ethics clinical_knowledge college_medicine global_facts human_aging "
        "management marketing medical_genetics miscellaneous nutrition professional_accounting "
        "professional_medicine virology"
    ).split(),
}
SUBJECTS: dict[str, str] = {s: cat for cat, subs in CATEGORIES.items() for s in subs}
"""subject -> category, all 57 subjects."""

Parsed = tuple[str, list[str], int]


def description(subject: str) -> str:
    return (
        "The following are multiple choice questions (with answers) about "
        f"{subject.replace('_', ' ')}.\n\n"
    )


def expand(
    names: list[str], key: str, available: Callable[[], list[str]] | None = None
) -> list[str]:
    """Subject and category names -> subjects (sorted, unique); unknown names: ConfigError.

    A category means its subjects that the source holds (`available()`, default all 57).
    """
    out: set[str] = set()
    for name in names:
        if name in CATEGORIES:
            have = set(available()) if available else set(SUBJECTS)
            out.update(s for s in CATEGORIES[name] if s in have)
        elif name in SUBJECTS:
            out.add(name)
        else:
            known = [*CATEGORIES, *SUBJECTS]
            raise ConfigError(
                f"data.{key}: unknown MMLU subject or category {name!r}"
                f"{did_you_mean(name, known)}; categories: {', '.join(CATEGORIES)}"
            )
    return sorted(out)


def _parse_csv(fields: list[str]) -> Parsed:
    if len(fields) != 6:
        raise RowError(
            f"expected 6 columns (question, A, B, C, D, answer letter), got {len(fields)}"
        )
    letter = fields[5].strip()
    if letter not in LETTERS[:4]:
        raise RowError(f"answer letter must be one of A, B, C, D, got {fields[5]!r}")
    return fields[0], fields[1:5], LETTERS.index(letter)


def _parse_hub(row: dict[str, Any]) -> Parsed:
    choices = need(row, "choices", list)
    if len(choices) != 4 or not all(isinstance(c, str) for c in choices):
        raise RowError(f"field 'choices' must be 4 strings, got {choices!r}"[:200])
    answer = need(row, "answer", int)
    if not 0 <= answer < 4:
        raise RowError(f"field 'answer' must be 0-3, got {answer}")
    clean = [c.replace("\ufeff", "") for c in choices]
    return need(row, "question").replace("\ufeff", ""), clean, answer


def _hub_split(split_dir: str, subjects: list[str], on_bad: str) -> dict[str, list]:
    """One load of the `all` config, grouped by subject, indexed within each subject."""
    split = HUB_SPLIT[split_dir]
    by_subject: dict[str, list[Row]] = {s: [] for s in subjects}
    for row in hub_rows(*HUB, split):
        rows = by_subject.get(row.raw.get("subject"))
        if rows is not None:
            rows.append(Row(row.line, len(rows), row.raw))
    label = hub_label(*HUB, split)
    return {
        s: parse_rows(f"{label} ({s})", rows, _parse_hub, on_bad, unit="row")
        for s, rows in by_subject.items()
    }


def _split_rows(ctx: TaskContext, split_dir: str, subjects: list[str]) -> dict[str, list]:
    """subject -> [(Row, (question, choices, gold))] of one split dir (dev | val | test)."""
    data = data_config(ctx)
    if data.source == "hub":
        return _hub_split(split_dir, subjects, data.on_bad_row)
    out = {}
    for s in subjects:
        path = data_file(data, f"mmlu/{split_dir}/{s}_{split_dir}.csv", LAYOUT)
        out[s] = parse_rows(str(path), read_csv_rows(path), _parse_csv, data.on_bad_row)
    return out


def _available(ctx: TaskContext) -> list[str]:
    """Subjects a source holds: all 57 on the hub, those under mmlu/test/ in files."""
    data = data_config(ctx)
    if data.source == "hub":
        return sorted(SUBJECTS)
    test_dir = data_file(data, "mmlu/test", LAYOUT)
    found = sorted(p.name[: -len("_test.csv")] for p in test_dir.glob("*_test.csv"))
    unknown = [s for s in found if s not in SUBJECTS]
    if unknown:
        raise DataError(f"{test_dir}/{unknown[0]}_test.csv: not one of the 57 MMLU subjects")
    if not found:
        raise DataError(f"{test_dir}: no <subject>_test.csv files; expected {LAYOUT}")
    if len(found) < len(SUBJECTS):
        warnings.warn(
            f"{test_dir}: only {len(found)} of {len(SUBJECTS)} MMLU subjects found; "
            "MMLU scores cover those subjects only",
            stacklevel=3,
        )
    return found


def domain_subjects(train_tasks: tuple[str, ...] | list[str]) -> dict[str, str]:
    """subject -> the training task whose domain covers it (`Task.mmlu_domain`): MMLU's
    clinical_knowledge is in-domain for a MedMCQA-trained run, so it cannot measure that
    run's retention. MMLU's own training subjects are handled by `subjects_for`."""
    return {s: t for t in train_tasks for s in MMLU_DOMAINS.get(t, ()) if s in SUBJECTS}


def retention_subjects(ctx: TaskContext) -> list[str]:
    """The MMLU subjects the retention probe scores for this sweep (the report lists them)."""
    return subjects_for(ctx, "test")[0]


def subjects_for(ctx: TaskContext, split: str) -> tuple[list[str], list[str]]:
    """(evaluated subjects, training subjects), checked against each other."""
    data = data_config(ctx)
    available = functools.cache(lambda: _available(ctx))
    train = expand(data.mmlu_train_subjects, "mmlu_train_subjects", available)
    trained = "mmlu" in ctx.train_tasks or split in ("train", "val")
    if trained and not train:
        raise ConfigError(
            "data.mmlu_train_subjects: empty, but mmlu is a training task; name the MMLU "
            "subjects or categories to train on (they must differ from the evaluated ones)"
        )
    domain = domain_subjects(ctx.train_tasks)
    if data.mmlu_subjects:
        evaluated = expand(data.mmlu_subjects, "mmlu_subjects", available)
        inside = [s for s in evaluated if s in domain]
        if inside:
            raise ConfigError(
                f"data.mmlu_subjects: {', '.join(inside)} "
                f"{'is' if len(inside) == 1 else 'are'} in the domain of training task "
                f"{domain[inside[0]]!r}; retention is measured on subjects no training task "
                "of the sweep covers (drop them, or leave data.mmlu_subjects empty to get "
                "every unrelated subject)"
            )
    else:
        evaluated = [s for s in available() if s not in train and s not in domain]
    both = sorted(set(evaluated) & set(train)) if trained else []
    if both:
        raise ConfigError(
            f"data.mmlu_subjects and data.mmlu_train_subjects overlap in {', '.join(both)}; "
            "a subject trained on cannot measure retention"
        )
    if not evaluated:
        raise ConfigError("data.mmlu_subjects: no MMLU subject is left to evaluate")
    return evaluated, train


def _items(ctx: TaskContext, split_dir: str, subjects: list[str], shots: int) -> list[Item]:
    rows = _split_rows(ctx, split_dir, subjects)
    dev = _split_rows(ctx, "dev", subjects) if shots else {}
    items = []
    for s in subjects:
        head = description(s)
        if shots:
            if len(dev[s]) < shots:
                raise ConfigError(
                    f"data.shots: {shots} exemplars asked for, but MMLU {s} has "
                    f"{len(dev[s])} dev rows"
                )
            for _, (q, ch, g) in dev[s][:shots]:
                head += f"{mcq_block(q.strip(), ch)} {LETTERS[g]}\n\n"
        for row, (q, ch, g) in rows[s]:
            items.append(
                mcq_item(f"mmlu/{s}/{split_dir}/{row.index}", q.strip(), ch, g, None, s, head)
            )
    return items


def load(split: str, ctx: TaskContext) -> list[Item]:
    evaluated, train = subjects_for(ctx, split)
    if split == "train":
        return _items(ctx, "test", train, 0)
    if split == "val":  # MMLU's own val rows of the trained subjects: where lr is chosen
        return _items(ctx, "val", train, 0)
    return _items(ctx, "test", evaluated, data_config(ctx).shots)


def replay(ctx: TaskContext) -> list[Item]:
    """The general data `train.replay_fraction` mixes in when MMLU measures retention: the
    val rows of the evaluated subjects (in no eval set: eval reads their test rows, few-shot
    prompts their dev rows; lr is chosen on the val rows of the trained subjects only)."""
    evaluated, _ = subjects_for(ctx, "test")
    return _items(ctx, "val", evaluated, 0)


TASK = Task(
    "mmlu",
    "mcq",
    load,
    "MMLU, 57 subjects of 4-option MCQ (the retention probe), prompted like lm-eval's mmlu; "
    "test = test rows of the evaluated subjects, train = test rows and val = val rows of "
    "data.mmlu_train_subjects",
    splits=("train", "val", "test"),
    replay=replay,
)
