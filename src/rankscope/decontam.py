"""Train/eval decontamination: training items that share a 13-gram with an eval item are dropped.

The rule is GPT-3's (Brown et al. 2020, "Language Models are Few-Shot Learners", appendix C):
text is reduced to lowercase words without punctuation, and a training document that shares
any 13-gram of such words with a benchmark item is contaminated. Appendix C has no rule for a
text shorter than N words (its overlap analysis lowers N to the 5th-percentile example
length, at least 8; a shorter example cannot collide); here a question shorter than 13 words
is its own single n-gram, and any whole question repeated verbatim is caught.

Boilerplate. Appendix C ignores 13-grams that match more than 10 training documents (common
phrases, legal boilerplate). A task's items are few and alike, so here, within each item set
(a training set, an eval set): (1) the words covered by 13-grams that more than 1 % of its
items (and more than 10) share are stripped first: an instruction or description carried by
many items, whatever question follows it; (2) a 13-gram counts only if it holds a word that
at most that many items use: a templated task's 13-grams of template words, names and small
numbers ("then kim loses 1 books how many books does kim have now") are shared by different
questions.

Only the question is compared, in its zero-shot prompt: not the few-shot exemplars, not a
one-line head set off by a blank line (MMLU's "The following are multiple choice questions
... about {subject}."), not the lettered options (so shuffled options, or the same question
filed under two MMLU subjects, still match). Contaminated items leave the training set only,
never an eval set.

Deterministic everywhere (words hashed with BLAKE2b, a 13-gram as a polynomial in its words'
hashes mod 2**64; never Python's salted `hash()`), so the driver and every worker drop the
same items; vectorised with numpy, so a 14k-item eval set is indexed in about a second.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rankscope.rundir import SweepDir, read_text, write_atomic
from rankscope.tasks.base import LETTERS, Item

NGRAM = 13
BOILERPLATE_FRACTION = 0.01
BOILERPLATE_MIN_ITEMS = 10
RULE = "13gram-v1"
"""Named in run identities and in the JSON file: a change to the rule must change it."""
MAX_EXAMPLES = 5

_WORD = re.compile(r"[a-z0-9]+")


_BASE = 0x100000001B3  # odd: 13-grams hash as a polynomial in their words' hashes, mod 2**64
_POWERS = np.array([pow(_BASE, NGRAM - 1 - j, 1 << 64) for j in range(NGRAM)], dtype=np.uint64)
_WORD_KEYS: dict[str, int] = {}


def _key(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _word_key(word: str) -> int:
    key = _WORD_KEYS.get(word)
    if key is None:
        key = _WORD_KEYS[word] = _key(word)
    return key


def _options_start(prompt: str, choices: tuple[str, ...]) -> int:
    """Where the lettered options begin: each option found from the end backwards, then the
    letter A just before the first one (the whole prompt when they are not found in order)."""
    pos = len(prompt)
    for choice in reversed(choices):
        pos = prompt.rfind(choice, 0, pos)
        if pos < 0:
            return len(prompt)
    marker = prompt.rfind(LETTERS[0], max(0, pos - 8), pos)
    return marker if marker >= 0 else pos


def question_text(item: Item) -> str:
    """The question of a zero-shot prompt: without its options and without a one-line head
    set off by a blank line (a task description shared by every item of a subject)."""
    text = item.prompt[: _options_start(item.prompt, item.choices)] if item.choices else item.prompt
    head, sep, rest = text.partition("\n\n")
    return rest if sep and "\n" not in head else text


def words(text: str) -> list[str]:
    """Lowercase words without punctuation: GPT-3's normalisation."""
    return _WORD.findall(text.lower())


def _limit(n_items: int) -> float:
    """More items than this share it: boilerplate (1 % of a set, and more than 10 items)."""
    return max(BOILERPLATE_MIN_ITEMS, BOILERPLATE_FRACTION * n_items)


def _too_common(values: np.ndarray, owner: np.ndarray, n_items: int) -> np.ndarray:
    """The values that more than `_limit(n_items)` items hold (an item counted once)."""
    limit = _limit(n_items)
    uniq, counts = np.unique(values, return_counts=True)
    candidates = uniq[counts > limit]  # occurrences bound the items from above
    if not len(candidates):
        return candidates
    held = np.isin(values, candidates)
    v, o = values[held], owner[held]
    order = np.lexsort((o, v))
    v, o = v[order], o[order]
    first = np.ones(len(v), dtype=bool)
    first[1:] = (v[1:] != v[:-1]) | (o[1:] != o[:-1])
    uniq, counts = np.unique(v[first], return_counts=True)
    return uniq[counts > limit]


@dataclass
class _Words:
    """An item set's words laid end to end, one array for the whole set."""

    texts: list[list[str]]
    hashes: np.ndarray = field(init=False)
    """Each word's 64-bit BLAKE2b hash."""
    owner: np.ndarray = field(init=False)
    """The item each word belongs to (non-decreasing)."""

    def __post_init__(self) -> None:
        flat = [w for ws in self.texts for w in ws]
        table = {w: _word_key(w) for w in set(flat)}
        self.hashes = np.fromiter(map(table.__getitem__, flat), dtype=np.uint64, count=len(flat))
        lengths = [len(ws) for ws in self.texts]
        self.owner = np.repeat(np.arange(len(self.texts)), lengths)

    def ngrams(self) -> tuple[np.ndarray, np.ndarray]:
        """(start, hash) of every 13-word window inside one item: a polynomial hash of the
        words' hashes, the same on every machine."""
        n = len(self.hashes) - NGRAM + 1
        if n <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint64)
        starts = np.flatnonzero(self.owner[:n] == self.owner[NGRAM - 1 :])
        keys = np.zeros(len(starts), dtype=np.uint64)
        for j in range(NGRAM):
            keys += self.hashes[starts + j] * _POWERS[j]  # wraps mod 2**64
        return starts, keys

    def without(self, cut: np.ndarray) -> _Words:
        """The words not `cut` (an item all of whose words are cut keeps them all)."""
        n_items = len(self.texts)
        lengths = np.bincount(self.owner, minlength=n_items)
        whole = np.bincount(self.owner, weights=cut, minlength=n_items) == lengths
        cut = cut & ~whole[self.owner]
        if not cut.any():
            return self
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        texts = [
            [w for w, c in zip(ws, cut[a:b], strict=True) if not c] if cut[a:b].any() else ws
            for ws, a, b in zip(self.texts, bounds[:-1], bounds[1:], strict=True)
        ]
        return _Words(texts)


def strip_boilerplate(words_: _Words) -> _Words:
    """The words that the set's too-common 13-grams cover, taken out: an instruction or a
    description many items carry, whatever question follows it."""
    starts, keys = words_.ngrams()
    common = _too_common(keys, words_.owner[starts], len(words_.texts))
    hit = starts[np.isin(keys, common)]
    diff = np.zeros(len(words_.hashes) + 1, dtype=np.int64)
    np.add.at(diff, hit, 1)
    np.add.at(diff, hit + NGRAM, -1)
    return words_.without(np.cumsum(diff[:-1]) > 0)


@dataclass(frozen=True)
class Grams:
    """An item set's hashed 13-grams (`keys`, each with the item holding it, `owner`, in
    item order) and the hash of each item's whole normalised question."""

    keys: np.ndarray
    owner: np.ndarray
    wholes: list[int]


def set_grams(items: list[Item]) -> Grams:
    """The 13-grams left once boilerplate is stripped that hold at least one uncommon word
    (a 13-gram of common words only, a templated task's template with its few names, objects
    and small numbers filled in, is shared by different questions), and each whole question:
    a question shorter than 13 words is its own one n-gram."""
    kept = strip_boilerplate(_Words([words(question_text(it)) for it in items]))
    common = _too_common(kept.hashes, kept.owner, len(items))
    rare = np.concatenate([[0], np.cumsum(~np.isin(kept.hashes, common))])
    starts, keys = kept.ngrams()
    has_rare = rare[starts + NGRAM] > rare[starts]
    wholes = [_key("=" + " ".join(ws)) for ws in kept.texts]
    return Grams(keys[has_rare], kept.owner[starts[has_rare]], wholes)


@dataclass(frozen=True)
class EvalIndex:
    """An eval set's 13-grams (sorted, unique) and whole questions, each with the first eval
    item holding it (the examples shown)."""

    keys: np.ndarray
    first: np.ndarray
    wholes: dict[int, int]
    ids: list[str]


def index_eval(items: list[Item]) -> EvalIndex:
    grams = set_grams(items)
    order = np.lexsort((grams.owner, grams.keys))
    keys, at = np.unique(grams.keys[order], return_index=True)
    wholes: dict[int, int] = {}
    for i, whole in enumerate(grams.wholes):
        wholes.setdefault(whole, i)
    return EvalIndex(keys, grams.owner[order][at], wholes, [it.id for it in items])


def contaminated(train: list[Item], index: EvalIndex, grams: Grams | None = None) -> dict[str, str]:
    """train item id -> an eval item it shares its whole question or a 13-gram with (the
    whole question first, else its first shared 13-gram), in training order. `grams`: the
    training items' own, when already computed."""
    grams = set_grams(train) if grams is None else grams
    found = np.isin(grams.keys, index.keys)
    owners, first = np.unique(grams.owner[found], return_index=True)
    at = np.searchsorted(index.keys, grams.keys[found][first])
    by_gram = dict(zip(owners.tolist(), index.first[at].tolist(), strict=True))
    out: dict[str, str] = {}
    for i, it in enumerate(train):
        hit = index.wholes.get(grams.wholes[i], by_gram.get(i))
        if hit is not None:
            out[it.id] = index.ids[hit]
    return out


@dataclass(frozen=True)
class Overlap:
    """What one eval task took out of one training task's items."""

    train_task: str
    eval_task: str
    dropped: int
    train_items: int
    """Training items checked (the task's whole training split, before any subset)."""
    examples: list[tuple[str, str]]
    """Up to 5 (training item, eval item) pairs."""


def decontaminate(
    train_task: str, train: list[Item], evals: Mapping[str, EvalIndex]
) -> tuple[list[Item], list[Overlap]]:
    """The training items no eval task's item contaminates (in their order), and per eval
    task what was dropped."""
    bad: set[str] = set()
    overlaps = []
    grams = set_grams(train)
    for eval_task, index in evals.items():
        hits = contaminated(train, index, grams)
        bad |= set(hits)
        examples = list(hits.items())[:MAX_EXAMPLES]
        overlaps.append(Overlap(train_task, eval_task, len(hits), len(train), examples))
    return [it for it in train if it.id not in bad], overlaps


@dataclass(frozen=True)
class Decontamination:
    """A sweep's decontamination, as written to <out>/decontamination.json."""

    overlaps: list[Overlap]
    kept: dict[str, int]
    """Training task -> training items left (before any `tasks.max_train_items` subset)."""
    rule: str = RULE

    def dropped(self, train_task: str) -> int:
        """Training items of a task dropped (an item two eval tasks contaminate counts once)."""
        checked = next((o.train_items for o in self.overlaps if o.train_task == train_task), 0)
        return checked - self.kept.get(train_task, checked)

    def to_json(self) -> str:
        doc = {
            "rule": self.rule,
            "ngram": NGRAM,
            "boilerplate": f"> {BOILERPLATE_FRACTION:.0%} and > {BOILERPLATE_MIN_ITEMS} items",
            "kept": self.kept,
            "overlaps": [asdict(o) for o in self.overlaps],
        }
        return json.dumps(doc, indent=1) + "\n"


def write_decontamination(sweep_dir: Path, result: Decontamination) -> Path:
    path = SweepDir(Path(sweep_dir)).decontam_file
    write_atomic(path, result.to_json())
    return path


def read_decontamination(sweep_dir: Path) -> Decontamination | None:
    """The sweep's decontamination counts (None for a sweep that wrote none: older ones)."""
    text = read_text(SweepDir(Path(sweep_dir)).decontam_file)
    if text is None:
        return None
    doc = json.loads(text)
    overlaps = [
        Overlap(**{**o, "examples": [tuple(e) for e in o["examples"]]}) for o in doc["overlaps"]
    ]
    return Decontamination(overlaps, {k: int(v) for k, v in doc["kept"].items()}, doc["rule"])
