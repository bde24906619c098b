"""Write the shipped benchmark subsets `src/rankscope/data/smol/` (a maintainer's step).

    python scripts/make_smol_data.py [--src SHARED_DATA] [--out DIR] [--check]

reads the workplace's offline copies of the five benchmarks (`shared/data`, see its README:
upstream repositories, commits, licenses; `--src`, else $RANKSCOPE_SHARED_DATA, else
`shared/data` in or beside the repository) and writes seeded, stratified subsets of them in
the layouts the `data.source: files` loaders read, plus `ORIGIN.md`. Deterministic: the same
sources give the same bytes. `--check` writes nothing to `--out`: it rebuilds into a
temporary folder and compares that, file by file, with the files in `--out` (default the
shipped folder); it lists every file missing, extra or different and exits 1 if there is
one, 0 when all are the same bytes. It needs the full sources, so it is a maintainer's check
(run it after changing this script or a loader it calls), not part of the test suite. Every row
kept is its source's raw bytes (a JSONL line, an MMLU CSV record with its own line endings,
a MathQA array element with its indentation), so the loaders parse exactly what they would
parse in the full files; rows keep their source order.

What is drawn (sizes for a 2-core CPU budget; configs/smol-cpu.yaml):
  gsm8k    200 train / 100 test lines, stratified by solution length (lines before '####')
  mathqa   200 of dev.json (its train) / 100 of test.json, stratified by `category`
  mmlu     every dev row (5 per subject, the few-shot exemplars), 2 val and 4 test records
           per subject, all 57 subjects
  medmcqa  320 rows of validation.jsonl, 220 that the loaders' stable hash (default
           data.holdout_fraction 0.2) puts in train and 100 in test, each side stratified by
           gold letter
  legalmcq the same for CaseHOLD's 1,000-row sample (220 train-side + 100 test-side rows)
Inputs are checked against the sha256 digests the shared README gives (MMLU: a digest of
its 171 CSV files computed when this script was written), so a changed source is refused
rather than silently giving other subsets.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import random
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rankscope.tasks import legalmcq, medmcqa
from rankscope.tasks.base import allocate
from rankscope.tasks.mmlu import SUBJECTS
from rankscope.tasks.sources import in_holdout

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "rankscope" / "data" / "smol"
SEED = 15  # project issue 15
HOLDOUT = 0.2  # DataConfig.holdout_fraction's default: the side each carved row lands on

N_GSM8K = {"train": 200, "test": 100}
N_MATHQA = {"dev": 200, "test": 100}
N_MMLU = {"val": 2, "test": 4}  # per subject; dev: all 5
N_CARVED = {"train": 220, "test": 100}  # medmcqa, legalmcq: train side ~10% goes to val

SHA256 = {
    "gsm8k/train.jsonl": "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465",
    "gsm8k/test.jsonl": "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
    "medmcqa/validation.jsonl": "ceccdb9cc55a84ec07da231ae1f44ba1e661f0fbb7c3a1c2a23246d72674a87c",
    "mathqa/dev.json": "aeca12424fc8f32d0e35c09b7738986a446c12f110c8071f3cc8913712f04bf3",
    "mathqa/test.json": "dfe7bc4691caf26842ccd4cf14e8f978327bab4f2989e0b076a4e6b38a9371d1",
    "legalmcq/case_hold_test_sample1000.jsonl": (
        "911b6d1c36c724973c5116c4a951bcb0a392c35a68fb75fde2aafd2f45b34d67"
    ),
}
MMLU_SHA256 = "1669d5da2e3b43b929b7aaed066b4707874ac62989d8aeda200f0f72cdbddf20"
"""sha256 over `<relative path>\\0<file sha256>\\n` of mmlu/{dev,val,test}/*.csv, sorted."""


def default_src() -> Path | None:
    """$RANKSCOPE_SHARED_DATA, else shared/data in the repository or beside it."""
    env = os.environ.get("RANKSCOPE_SHARED_DATA")
    candidates = [Path(env)] if env else [ROOT / "shared" / "data", ROOT.parent / "shared" / "data"]
    return next((p for p in candidates if (p / "README.md").is_file()), None)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mmlu_digest(src: Path) -> str:
    files = sorted((src / "mmlu").glob("*/*.csv"))
    listing = "".join(f"{p.relative_to(src).as_posix()}\0{sha256(p.read_bytes())}\n" for p in files)
    return sha256(listing.encode())


def check_sources(src: Path) -> None:
    for rel, digest in SHA256.items():
        path = src / rel
        if not path.is_file():
            sys.exit(f"{path}: not found (--src must be a folder laid out like shared/data)")
        if sha256(path.read_bytes()) != digest:
            sys.exit(f"{path}: sha256 differs from the one shared/data's README gives")
    if mmlu_digest(src) != MMLU_SHA256:
        sys.exit(f"{src / 'mmlu'}: the CSV files differ from the release this script expects")


def rng(*parts: object) -> random.Random:
    return random.Random("/".join(["rankscope-smol", str(SEED), *map(str, parts)]))


def stratified(
    keys: Sequence[str], n: int, label: str, pool: Sequence[int] | None = None
) -> list[int]:
    """`n` indices of `pool` (default: all), spread over the groups `keys[i]` in proportion
    (Hamilton's method, `rankscope.tasks.base.allocate`), seeded per group; sorted."""
    pool = list(range(len(keys))) if pool is None else list(pool)
    groups: dict[str, list[int]] = {}
    for i in pool:
        groups.setdefault(keys[i], []).append(i)
    take = allocate({g: len(ix) for g, ix in sorted(groups.items())}, n)
    chosen: list[int] = []
    for g in sorted(groups):
        chosen += rng(label, g).sample(groups[g], take[g])
    return sorted(chosen)


# ----------------------------------------------------------------- raw units of the files
def jsonl_lines(path: Path) -> list[bytes]:
    """Every line of a JSONL file, its newline kept (the files hold no blank lines)."""
    lines = path.read_bytes().splitlines(keepends=True)
    assert all(line.strip() for line in lines), f"{path}: blank line"
    return lines


def csv_records(path: Path) -> list[tuple[str, list[str]]]:
    """(raw text, fields) of every record of a header-less CSV file, split the way the
    loader's reader splits it (newline='': a quoted field may hold line breaks and '\\r')."""
    text = path.read_bytes().decode("utf-8")
    consumed: list[str] = []

    def lines():
        for line in io.StringIO(text, newline=""):
            consumed.append(line)
            yield line

    out = []
    for fields in csv.reader(lines()):
        raw = "".join(consumed)
        consumed.clear()
        if fields:
            out.append((raw, fields))
    assert "".join(r for r, _ in out) == text, f"{path}: records do not cover the file"
    return out


def json_array_elements(path: Path) -> list[tuple[str, dict]]:
    """(raw text, object) of every element of a file holding one JSON array."""
    text = path.read_text(encoding="utf-8")
    dec, ws = json.JSONDecoder(), re.compile(r"[\s,]*")
    i, out = ws.match(text, text.index("[") + 1).end(), []
    while text[i] != "]":
        obj, j = dec.raw_decode(text, i)
        out.append((text[i:j], obj))
        i = ws.match(text, j).end()
    return out


# ------------------------------------------------------------------------ the benchmarks
def write(path: Path, data: bytes, written: dict[str, int], out: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    written[path.relative_to(out).as_posix()] = len(data)


def gsm8k(src: Path, out: Path, written: dict, counts: dict) -> None:
    for split, n in N_GSM8K.items():
        lines = jsonl_lines(src / "gsm8k" / f"{split}.jsonl")

        def steps(line: bytes) -> str:
            answer = json.loads(line)["answer"]
            k = answer.split("####")[0].strip().count("\n") + 1
            return f"{min(k, 8):02d}"  # 1..7 steps, 8 = eight or more

        keep = stratified([steps(x) for x in lines], n, f"gsm8k/{split}")
        write(out / "gsm8k" / f"{split}.jsonl", b"".join(lines[i] for i in keep), written, out)
        counts[f"gsm8k/{split}"] = len(keep)


def mathqa(src: Path, out: Path, written: dict, counts: dict) -> None:
    for split, n in N_MATHQA.items():
        elements = json_array_elements(src / "mathqa" / f"{split}.json")
        keep = stratified([o["category"] for _, o in elements], n, f"mathqa/{split}")
        # the source's own layout: '[', elements indented 4 and separated by ',\n', ']'
        body = ",\n".join("    " + elements[i][0] for i in keep)
        write(out / "mathqa" / f"{split}.json", f"[\n{body}\n]".encode(), written, out)
        counts[f"mathqa/{split}"] = len(keep)


def mmlu(src: Path, out: Path, written: dict, counts: dict) -> None:
    subjects = sorted(SUBJECTS)
    for s in subjects:
        dev = src / "mmlu" / "dev" / f"{s}_dev.csv"
        write(out / "mmlu" / "dev" / dev.name, dev.read_bytes(), written, out)
        for split, n in N_MMLU.items():
            path = src / "mmlu" / split / f"{s}_{split}.csv"
            records = csv_records(path)
            keep = sorted(rng("mmlu", split, s).sample(range(len(records)), n))
            text = "".join(records[i][0] for i in keep)
            # a record taken from the middle of a file ends in its line break; only a file's
            # last record may lack one, and it stays last
            assert all(records[i][0].endswith(("\n", "\r")) for i in keep[:-1])
            write(out / "mmlu" / split / path.name, text.encode(), written, out)
    counts["mmlu/subjects"] = len(subjects)
    counts["mmlu/dev"] = 5 * len(subjects)
    for split, n in N_MMLU.items():
        counts[f"mmlu/{split}"] = n * len(subjects)


def carved(
    name: str,
    rel: str,
    parse: Callable[[str], tuple[str, list[str], int]],
    out: Path,
    src: Path,
    written: dict,
    counts: dict,
) -> None:
    """Rows of a one-file task whose loaders carve train/test by `in_holdout` of the
    parsed question text: N_CARVED[side] rows from each side, stratified by gold."""
    lines = jsonl_lines(src / rel)
    parsed = [parse(line.decode("utf-8")) for line in lines]
    golds = [str(p[2]) for p in parsed]
    keep: list[int] = []
    for side, n in N_CARVED.items():
        pool = [i for i, p in enumerate(parsed) if in_holdout(p[0], HOLDOUT) == (side == "test")]
        keep += stratified(golds, n, f"{name}/{side}", pool)
        counts[f"{name}/{side}"] = n
    write(out / rel, b"".join(lines[i] for i in sorted(keep)), written, out)


# ------------------------------------------------------------------------------ ORIGIN.md
ORIGIN = """\
# Shipped benchmark subsets (`data.dir` of configs/smol-cpu.yaml)

Seeded, stratified subsets of the five real benchmarks, small enough for a 2-core CPU sweep
with SmolLM2-135M-Instruct, in the layouts the `data.source: files` loaders read. Written by
`scripts/make_smol_data.py` (seed {seed}) from the workplace's offline copies (`shared/data`;
its README documents every file), which are byte-for-byte copies of the upstream files named
below; rerunning the script gives these bytes again. Every row kept is its upstream raw
bytes (a JSONL line, an MMLU CSV record, a MathQA array element with its indentation), in
upstream order; nothing was re-encoded or edited.

Per folder: upstream repository @ commit and path; license; what was kept.

* `gsm8k/`: `openai/grade-school-math` @ 3101c7d5072418e28b9008a6636bde82a006892c,
  `grade_school_math/data/{{train,test}}.jsonl`. MIT. {gsm8k/train} train / {gsm8k/test} test
  lines, stratified by solution length (lines before `####`).
* `mathqa/`: `anisohn/llms_knowlege_graphs` @ b5a44691da62ed588edcd12fc2f62434fd4e96c7,
  `MathQA/{{dev,test}}.json` (the official MathQA release; Amini et al., NAACL 2019).
  Apache-2.0. {mathqa/dev} elements of `dev.json` (the loaders' train) / {mathqa/test} of
  `test.json`, stratified by `category`.
* `mmlu/`: `stanford-cs336/assignment5-alignment` @ eb2c562e05802d3c9ee4c4ec2eec43b104d77e9e,
  `data/mmlu/` (verbatim copy of the official `hendrycks/test` release; Hendrycks et al.,
  ICLR 2021). MIT. All {mmlu/subjects} subjects: every dev row ({mmlu/dev}, 5 per subject: the
  few-shot exemplars), and {mmlu_val} val and {mmlu_test} test records per subject drawn at
  random ({mmlu/val} val, {mmlu/test} test).
* `medmcqa/`: `Saf9933/Medpredict` @ f8604a956addb057e059c8d1ecc8943ce3b38f45,
  `data/medmcqa/validation.jsonl` (export of HF `openlifescienceai/medmcqa` validation; MedMCQA,
  Pal et al., CHIL 2022). Apache-2.0 (HF card) / MIT (authors' repository). {medmcqa_rows}
  rows: {medmcqa/train} that the loaders' stable hash puts in train and {medmcqa/test} in test
  at `data.holdout_fraction` {holdout} (the default), each side stratified by gold letter.
* `legalmcq/`: `coastalcph/zeroshot_lexglue` @ d23e81e4a0c59518c0c102357bdeaf4ba0db82f4,
  `data/instruction-following-examples/case_hold.jsonl` (a 1,000-item sample of the LexGLUE
  `case_hold` test split). CC BY 4.0 (attribution below). {legalmcq_rows} rows:
  {legalmcq/train} train-side and {legalmcq/test} test-side, chosen like MedMCQA's, stratified
  by gold holding.

At `data.holdout_fraction` {holdout}, MedMCQA and CaseHOLD give {medmcqa/test} test items
each; of their {medmcqa/train} train-side items, `data.val_fraction` 0.1 (by a hash of the item
id) goes to the carved validation split, where learning rates are chosen: MedMCQA
{medmcqa_fit} train + {medmcqa_val} validation, CaseHOLD {legalmcq_fit} + {legalmcq_val}. Another
holdout fraction carves the same rows differently. GSM8K's few-shot exemplars are the first
train lines kept here. The MMLU retention probe of a sweep trained on MedMCQA and CaseHOLD
scores the {mmlu_retention} subjects outside their domains ({mmlu_retention_rows} test rows).

## Attribution (CC BY 4.0: CaseHOLD / LexGLUE)

`legalmcq/case_hold_test_sample1000.jsonl` is a subset ({legalmcq_rows} of 1,000 rows,
unmodified) of CaseHOLD, licensed under CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/):

* CaseHOLD: Lucia Zheng, Neel Guha, Brandon R. Anderson, Peter Henderson and Daniel E. Ho,
  "When Does Pretraining Help? Assessing Self-Supervised Learning for Law and the CaseHOLD
  Dataset of 53,000+ Legal Holdings", ICAIL 2021 (arXiv:2104.08671). The case texts come
  from the Harvard Law School Caselaw Access Project.
* as distributed in LexGLUE: Ilias Chalkidis, Abhik Jana, Dirk Hartung, Michael Bommarito,
  Ion Androutsopoulos, Daniel Martin Katz and Nikolaos Aletras, "LexGLUE: A Benchmark
  Dataset for Legal Language Understanding in English", ACL 2022 (`coastalcph/lex_glue`);
* sampled and rendered into an instruction `input_text` by Ilias Chalkidis, "ChatGPT may
  Pass the Bar Exam soon, but has a Long Way to Go for the LexGLUE benchmark", 2023
  (repository `coastalcph/zeroshot_lexglue`).

Changes: rows were selected (a seeded sample, see above); no row was altered.

## Files

| file | bytes |
|---|---|
{files}
"""


def origin(counts: dict[str, int], written: dict[str, int]) -> str:
    groups: dict[str, int] = {}
    for rel, size in written.items():
        key = "mmlu/" + rel.split("/")[1] + "/*.csv" if rel.startswith("mmlu/") else rel
        groups[key] = groups.get(key, 0) + size
    files = "\n".join(f"| `{k}` | {v:,} |" for k, v in sorted(groups.items()))
    total = sum(written.values())
    files += f"\n| total (without this file) | {total:,} |"
    fields = {
        **counts,
        "seed": SEED,
        "holdout": HOLDOUT,
        "mmlu_val": N_MMLU["val"],
        "mmlu_test": N_MMLU["test"],
        "medmcqa_rows": counts["medmcqa/train"] + counts["medmcqa/test"],
        "legalmcq_rows": counts["legalmcq/train"] + counts["legalmcq/test"],
        "files": files,
    }
    return ORIGIN.format(**fields)


def loader_counts(out: Path) -> dict[str, int]:
    """What the `files` loaders make of the written subsets (checks that they read them)."""
    from rankscope.tasks import TASKS
    from rankscope.tasks.base import DataConfig, TaskContext, carve_val
    from rankscope.tasks.mmlu import retention_subjects

    ctx = TaskContext(
        data=DataConfig(source="files", dir=str(out)), train_tasks=("medmcqa", "legalmcq")
    )
    counts = {}
    for t in ("medmcqa", "legalmcq"):
        fit, val = carve_val(TASKS[t].items("train", ctx), ctx.data.val_fraction)
        counts[f"{t}_fit"], counts[f"{t}_val"] = len(fit), len(val)
    counts["mmlu_retention"] = len(retention_subjects(ctx))
    counts["mmlu_retention_rows"] = len(TASKS["mmlu"].items("test", ctx))
    return counts


def build(src: Path, out: Path) -> dict[str, int]:
    """Write the subsets and ORIGIN.md into `out` (replaced); {relative path: bytes}."""
    check_sources(src)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    written: dict[str, int] = {}
    counts: dict[str, int] = {}
    gsm8k(src, out, written, counts)
    mathqa(src, out, written, counts)
    mmlu(src, out, written, counts)
    carved("medmcqa", "medmcqa/validation.jsonl", medmcqa._parse_file, out, src, written, counts)
    carved("legalmcq", legalmcq.FILE, legalmcq._parse_file, out, src, written, counts)
    counts.update(loader_counts(out))
    write(out / "ORIGIN.md", origin(counts, written).encode(), written, out)
    return written


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def differences(built: Path, shipped: Path) -> list[str]:
    """Each file that is only in one of the folders, or in both with other bytes."""
    mine, theirs = _files(built), _files(shipped)
    out = [f"missing from {shipped}: {k}" for k in sorted(mine.keys() - theirs.keys())]
    out += [
        f"not written by this script: {shipped / k}" for k in sorted(theirs.keys() - mine.keys())
    ]
    out += [
        f"differs: {shipped / k}"
        for k in sorted(mine.keys() & theirs.keys())
        if mine[k] != theirs[k]
    ]
    return out


def check(src: Path, shipped: Path) -> int:
    """Rebuild from `src` into a temporary folder and compare with `shipped`: 0 when every
    file has the same bytes, else 1 (each difference printed)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        written = build(src, Path(tmp) / "smol")
        diffs = differences(Path(tmp) / "smol", shipped)
    for line in diffs:
        print(line)
    if diffs:
        print(f"{shipped}: {len(diffs)} difference(s) from a rebuild", file=sys.stderr)
        return 1
    print(f"{shipped}: the same bytes as a rebuild ({len(written)} files)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=None, help="folder laid out like shared/data")
    ap.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    ap.add_argument(
        "--check",
        action="store_true",
        help="rebuild into a temporary folder and compare with --out; write nothing",
    )
    args = ap.parse_args(argv)
    src = args.src or default_src()
    if src is None:
        sys.exit("no shared/data found: pass --src or set RANKSCOPE_SHARED_DATA")
    if args.check:
        return check(src, args.out)
    written = build(src, args.out)
    print(f"{args.out}: {len(written)} files, {sum(written.values()):,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
