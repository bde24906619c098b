"""The toy world: a deterministic, seeded procedural universe of facts and arithmetic.

It exists so the whole study runs offline on a CPU with effects that are *measured*, not
planted: the base model is pretrained on the general facts and on arithmetic tables, so it
knows them; the medical and legal domains ask new kinds of questions (their own vocabulary and
option layout) whose answers follow facts of the same subjects; the multi-step word
problems use a worked-answer format it has never seen. Fine-tuning must then teach, and can
make it forget, exactly as on the real benchmarks.

Everything here is plain Python (no torch) so task loading and `rankscope plan` stay light.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field

from rankscope.world.spec import PRESETS, WORLD_VERSION, WorldSpec, spec_for  # noqa: F401 (re-exported)

LETTERS = "ABCDE"
DOMAIN_SEP = ". is"  # the new domains' option layout: 'A . is pavo' (general facts: 'A ) red')
_CONS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


@dataclass(frozen=True)
class Relation:
    """A templated relation: subject pool -> value pool."""

    name: str
    statement: str  # "the color of {s} is {v} ."
    question: str  # "what is the color of {s} ?"
    question_alt: str  # a second phrasing
    values: tuple[str, ...]
    alias_of: str = ""  # new-domain relations: the known relation that decides the answer


@dataclass(frozen=True)
class Fact:
    relation: str
    subject: str
    value: str


@dataclass(frozen=True)
class Domain:
    """A new domain: its relations, and disjoint train/val/test subjects to ask about."""

    relations: tuple[str, ...]
    train_subjects: dict[str, tuple[str, ...]]  # relation -> subjects
    test_subjects: dict[str, tuple[str, ...]]
    val_subjects: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def subjects(self, split: str) -> dict[str, tuple[str, ...]]:
        return {"train": self.train_subjects, "val": self.val_subjects}.get(
            split, self.test_subjects
        )


@dataclass
class World:
    spec: WorldSpec
    relations: dict[str, Relation] = field(default_factory=dict)
    general: list[Fact] = field(default_factory=list)
    domains: dict[str, Domain] = field(default_factory=dict)
    answers: dict[tuple[str, str], str] = field(default_factory=dict)  # (relation, subject)
    names: list[str] = field(default_factory=list)  # every pseudo-word, for the vocabulary


def _pseudo_words(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        k = rng.choice((2, 2, 3))
        w = "".join(rng.choice(_CONS) + rng.choice(_VOWELS) for _ in range(k))
        if rng.random() < 0.5:
            w += rng.choice(_CONS)
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


def _relations(rng: random.Random, taken: set[str]) -> dict[str, Relation]:
    def pool(n: int) -> tuple[str, ...]:
        return tuple(_pseudo_words(rng, n, taken))

    rels = [
        Relation(
            "color",
            "the color of {s} is {v} .",
            "what is the color of {s} ?",
            "which color does {s} have ?",
            ("red", "blue", "green", "gold", "black", "white", "pink", "gray"),
        ),
        Relation(
            "capital",
            "the capital of {s} is {v} .",
            "what is the capital of {s} ?",
            "which city is the capital of {s} ?",
            pool(16),
        ),
        Relation(
            "born",
            "{s} was born in {v} .",
            "where was {s} born ?",
            "in which place was {s} born ?",
            pool(16),
        ),
    ]
    by_name = {r.name: r for r in rels}
    # New domains: relations never seen in pretraining, whose answer is a known fact of the
    # same subject (the 'remedy' of X is X's capital). Learning a domain = learning what its
    # questions ask; it generalises to subjects never asked about in training.
    for name, alias, st, q, q_alt in (
        (
            "cure",
            "capital",
            "the remedy for the {s} fever is {v} .",
            "which remedy cures the {s} fever ?",
            "what do doctors give for the {s} fever ?",
        ),
        (
            "organ",
            "color",
            "the {s} virus causes a {v} rash .",
            "what rash does the {s} virus cause ?",
            "which rash comes with the {s} virus ?",
        ),
        (
            "ruling",
            "born",
            "the case of {s} was tried in {v} .",
            "in which court was the case of {s} tried ?",
            "where did the judges hear {s} ?",
        ),
    ):
        rels.append(Relation(name, st, q, q_alt, by_name[alias].values, alias))
    return {r.name: r for r in rels}


def make_world(spec: WorldSpec) -> World:
    """Build the world deterministically from its spec."""
    rng = random.Random(spec.seed)
    taken: set[str] = set()
    relations = _relations(rng, taken)

    def facts(rel_names: tuple[str, ...], n: int) -> list[Fact]:
        subjects = _pseudo_words(rng, n, taken)
        return [
            Fact(
                rel_names[i % len(rel_names)],
                s,
                rng.choice(relations[rel_names[i % len(rel_names)]].values),
            )
            for i, s in enumerate(subjects)
        ]

    world = World(spec=spec, relations=relations)
    world.general = facts(("color", "capital", "born"), spec.n_general)
    world.answers = {(f.relation, f.subject): f.value for f in world.general}
    for name, rels in (("med", ("cure", "organ")), ("legal", ("ruling",))):
        world.domains[name] = _domain(world, rels)
    world.names = sorted(taken)
    return world


def _domain(world: World, rels: tuple[str, ...]) -> Domain:
    """Odd-indexed subjects of the aliased relation are tested; of the even-indexed ones,
    every fifth is held out for validation (carved from the training subjects, so a
    validation score, like a test score, is transfer to subjects never trained on) and the
    rest are trained on."""
    train, val, test = {}, {}, {}
    for r in rels:
        subjects = [f.subject for f in world.general if f.relation == world.relations[r].alias_of]
        even = subjects[0::2]
        val[r] = tuple(even[4::5])
        train[r] = tuple(s for s in even if s not in val[r])
        test[r] = tuple(subjects[1::2])
    return Domain(rels, train, test, val)


def domain_fact(world: World, domain: str, split: str, rng: random.Random) -> Fact:
    """A random question of a new domain about one of the split's subjects."""
    d = world.domains[domain]
    rel = rng.choice(d.relations)
    subject = rng.choice(d.subjects(split)[rel])
    return Fact(rel, subject, world.answers[(world.relations[rel].alias_of, subject)])


def render_mcq(question: str, options: list[str], sep: str = ")") -> str:
    """The toy world's MCQ prompt (like MMLU's 'Answer:' format): 'A ) red B ) blue ...'.

    The new domains write their options their own way ('A . is pavo B . is dunek ...',
    sep=". is"), as real domain exams have their own layouts. The base model never saw that
    layout and its letter lookup barely works through it, which with the unknown question
    words brings it near chance on the domains; fine-tuning teaches both.
    """
    opts = " ".join(f"{LETTERS[i]} {sep} {o}" for i, o in enumerate(options))
    return f"question : {question} {opts} answer :"


def fact_mcq(
    world: World,
    fact: Fact,
    n_options: int,
    rng: random.Random,
    alt: bool = False,
    gold: int | None = None,
) -> tuple[str, list[str], int]:
    """An MCQ about one fact: distractors from the same relation's values, shuffled; the
    answer at position `gold` when given (see `balanced_positions`), else anywhere."""
    rel = world.relations[fact.relation]
    distractors = rng.sample([v for v in rel.values if v != fact.value], n_options - 1)
    options = distractors + [fact.value]
    rng.shuffle(options)
    if gold is not None:
        options.remove(fact.value)
        options.insert(gold, fact.value)
    q = (rel.question_alt if alt else rel.question).format(s=fact.subject)
    sep = DOMAIN_SEP if rel.alias_of else ")"
    return render_mcq(q, options, sep), options, options.index(fact.value)


def balanced_positions(n_items: int, n_options: int, rng: random.Random) -> list[int]:
    """Answer positions for a set of MCQs, each letter equally often (±1), in random order.

    With positions drawn freely, a model that always answers one letter scores that letter's
    share of the sample (27.5 % for 'D' on 160 four-option items), not chance; balanced, every
    constant answer scores chance exactly, so what a model scores above it, it read.
    """
    positions = [i % n_options for i in range(n_items)]
    rng.shuffle(positions)
    return positions


def statement(world: World, fact: Fact) -> str:
    return world.relations[fact.relation].statement.format(s=fact.subject, v=fact.value)


# ---------------------------------------------------------------- arithmetic
_PEOPLE = ("ana", "tom", "lia", "bo", "eva", "max", "kim", "sam")
_THINGS = ("apples", "coins", "books", "shells", "cards", "stones")


def arith_problem(rng: random.Random, spec: WorldSpec, n_steps: int) -> tuple[str, str, int]:
    """A multi-step word problem with a worked answer ending in '#### N' (like GSM8K)."""
    who, what = rng.choice(_PEOPLE), rng.choice(_THINGS)
    x = rng.randint(1, spec.max_number)
    sentences = [f"{who} has {x} {what} ."]
    work = []
    for _ in range(n_steps):
        up = rng.random() < 0.5 if 0 < x < spec.max_number else x == 0
        if up:
            d = rng.randint(1, min(spec.max_step, spec.max_number - x))
            sentences.append(f"then {who} gets {d} more {what} .")
            work.append(f"{x} plus {d} is {x + d} .")
            x += d
        else:
            d = rng.randint(1, min(spec.max_step, x))
            sentences.append(f"then {who} loses {d} {what} .")
            work.append(f"{x} minus {d} is {x - d} .")
            x -= d
    question = " ".join(sentences) + f" how many {what} does {who} have now ?"
    completion = " ".join(work) + f" #### {x}"
    return f"question : {question} answer :", completion, x


def arith_expression(rng: random.Random, spec: WorldSpec, n_steps: int) -> tuple[str, int]:
    """'7 plus 5 minus 3' and its value, staying inside 0..max_number."""
    x = rng.randint(1, spec.max_number)
    text = str(x)
    for _ in range(n_steps):
        if (rng.random() < 0.5 and x < spec.max_number) or x == 0:
            d = rng.randint(1, min(spec.max_step, spec.max_number - x))
            text += f" plus {d}"
            x += d
        else:
            d = rng.randint(1, min(spec.max_step, x))
            text += f" minus {d}"
            x -= d
    return text, x


@functools.lru_cache(maxsize=8)
def arith_facts(spec: WorldSpec) -> tuple[str, ...]:
    """Every one-step table fact the base model learns in pretraining."""
    out = []
    for a in range(spec.max_number + 1):
        for d in range(1, spec.max_step + 1):
            if a + d <= spec.max_number:
                out.append(f"{a} plus {d} is {a + d} .")
            if a - d >= 0:
                out.append(f"{a} minus {d} is {a - d} .")
    return tuple(out)


def pretrain_line(world: World, rng: random.Random) -> str:
    """One pretraining document, sampled: the base model's 'internet'.

    General facts appear as statements and as MCQs in a generic format (so the base model
    has the MCQ skill, like real LMs have seen exam questions); arithmetic appears as table
    facts and one-line expressions. New-domain words appear only in neutral lists, so their
    embeddings are trained but their facts are unknown.
    """
    u = rng.random()
    if u < 0.30:
        return statement(world, rng.choice(world.general))
    if u < 0.65:
        fact = rng.choice(world.general)
        n = rng.choice((4, 5))
        prompt, options, gold = fact_mcq(world, fact, n, rng, alt=rng.random() < 0.5)
        return f"{prompt} {LETTERS[gold]}"
    if u < 0.85:
        return rng.choice(arith_facts(world.spec))
    if u < 0.95:
        expr, val = arith_expression(rng, world.spec, 1)
        n = 5
        prompt, options, gold = _number_mcq(rng, world.spec, expr, val, n)
        return f"{prompt} {LETTERS[gold]}"
    return " ".join(rng.sample(world.names, 6)) + " ."


def _number_mcq(
    rng: random.Random, spec: WorldSpec, expr: str, val: int, n: int
) -> tuple[str, list[str], int]:
    pool = [v for v in range(max(0, val - 6), min(spec.max_number, val + 6) + 1) if v != val]
    options = [str(v) for v in rng.sample(pool, n - 1)] + [str(val)]
    rng.shuffle(options)
    return render_mcq(f"what is {expr} ?", options), options, options.index(str(val))


def number_mcq(
    rng: random.Random, spec: WorldSpec, n_steps: int, n_options: int = 5
) -> tuple[str, list[str], int]:
    """Arithmetic as a 5-option MCQ (like MathQA)."""
    expr, val = arith_expression(rng, spec, n_steps)
    return _number_mcq(rng, spec, expr, val, n_options)


_FIXED_TEXT = (
    "question answer : ? . ) #### has then gets more loses how many does have now "
    "what is plus minus is"
)


def vocabulary(world: World) -> list[str]:
    """Every word the world can ever produce, enumerated (not sampled), sorted."""
    words: set[str] = set(_FIXED_TEXT.split()) | set(LETTERS) | set(world.names)
    words |= set(_PEOPLE) | set(_THINGS)
    words |= {str(i) for i in range(world.spec.max_number + 1)}
    for rel in world.relations.values():
        for tpl in (rel.statement, rel.question, rel.question_alt):
            words |= set(tpl.replace("{s}", " ").replace("{v}", " ").split())
        words |= set(rel.values)
    return sorted(words)
