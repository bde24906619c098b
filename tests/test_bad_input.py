"""Every kind of bad input, as a user meets it through the CLI: one message naming the
file/field/line and what would be valid, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import call_cli

FIXTURES = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer Llama (d=32) saved as a local model dir: loads in a second, no toy world."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rankscope.world.tiny import build_tokenizer

    path = tmp_path_factory.mktemp("tiny-llama")
    tok = build_tokenizer([line for line in (FIXTURES / "gsm8k" / "train.jsonl").open()])
    tok.save_pretrained(path)
    conf = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    LlamaForCausalLM(conf).save_pretrained(path)
    return path


def expect_refusal(monkeypatch, capsys, out: Path, args: list[str], *needles: str) -> str:
    code, text = call_cli(monkeypatch, capsys, "run", *args, "-o", str(out))
    assert code == 2, text
    for needle in needles:
        assert needle in text, text
    assert "Traceback" not in text
    assert not out.exists(), "a refused sweep must write nothing"
    return text


@pytest.mark.parametrize(
    "override, needles",
    [
        ("methods.lora.rankz=[4]", ["methods.lora.rankz: unknown key", "did you mean 'ranks'"]),
        ("train.epochs=many", ["train.epochs: expected float"]),
        ("train.epochs=0", ["train.epochs: must be > 0"]),
        ("methods.lora.ranks=[0,8]", ["methods.lora.ranks", "positive integer"]),
        ("methods.lora.ranks=[8.5]", ["methods.lora.ranks[0]: expected int"]),
        ("methods.lora.alpha=0", ["methods.lora.alpha: must be > 0"]),
        ("methods.full.lr=-1e-5", ["methods.full.lr: must be > 0"]),
        ("methods.lora.lr=0", ["methods.lora.lr: must be > 0"]),
        ("tasks.train=[gsm8kk]", ["unknown task 'gsm8kk'", "did you mean 'gsm8k'"]),
        ("methods.qlora={}", ["methods.qlora: unknown key", "valid keys here: base, full, lora"]),
        (
            "executor.kind=kubernetes",
            ["executor.kind: 'kubernetes' is not one of local, slurm, ray"],
        ),
        ("data.on_bad_row=ignore", ["data.on_bad_row: 'ignore' is not one of stop, skip"]),
    ],
)
def test_bad_config_values(monkeypatch, capsys, tmp_path, override, needles):
    expect_refusal(monkeypatch, capsys, tmp_path / "out", ["--set", override], *needles)


def test_malformed_yaml_names_file_and_line(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain:\n\tepochs: 3\n")
    expect_refusal(monkeypatch, capsys, tmp_path / "out", [str(bad)], str(bad), "line 3")


def test_unknown_model_offline(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expect_refusal(
        monkeypatch,
        capsys,
        tmp_path / "out",
        ["--set", "model.name=nobody/no-such-model"],
        "model.name: 'nobody/no-such-model'",
        "local model directory",
    )


def _real(tiny_model: Path, data_dir: Path, *extra: str) -> list[str]:
    sets = [
        f"model.name={tiny_model}",
        "data.source=files",
        f"data.dir={data_dir}",
        "tasks.train=[gsm8k]",
        "tasks.eval=[gsm8k, mmlu]",
        "tasks.retention=mmlu",
        *extra,
    ]
    return [arg for s in sets for arg in ("--set", s)]


def test_rank_above_the_layer_dimension(monkeypatch, capsys, tmp_path, tiny_model):
    args = _real(tiny_model, FIXTURES, "methods.lora.ranks=[8,64]", "methods.lora.lr=1e-3")
    expect_refusal(
        monkeypatch, capsys, tmp_path / "out", args, "rank 64 exceeds min(d_in, d_out) = 32"
    )


def test_target_modules_that_match_nothing(monkeypatch, capsys, tmp_path, tiny_model):
    args = _real(tiny_model, FIXTURES, "methods.lora.target_modules=[q_proj, query]")
    expect_refusal(
        monkeypatch, capsys, tmp_path / "out", args, "['query'] match no linear layer", "v_proj"
    )


def _copy_data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(FIXTURES, data)
    return data


def test_model_dir_without_tokenizer(monkeypatch, capsys, tmp_path, tiny_model):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(tiny_model / "config.json", bare / "config.json")
    args = _real(bare, FIXTURES)
    expect_refusal(monkeypatch, capsys, tmp_path / "out", args, "no tokenizer files")


def test_missing_data_dir(monkeypatch, capsys, tmp_path, tiny_model):
    args = _real(tiny_model, tmp_path / "nowhere")
    expect_refusal(monkeypatch, capsys, tmp_path / "out", args, str(tmp_path / "nowhere"))


def test_empty_data_file(monkeypatch, capsys, tmp_path, tiny_model):
    data = _copy_data(tmp_path)
    (data / "gsm8k" / "train.jsonl").write_text("")
    args = _real(tiny_model, data)
    expect_refusal(monkeypatch, capsys, tmp_path / "out", args, "train.jsonl", "empty")


def test_malformed_row_names_file_and_line(monkeypatch, capsys, tmp_path, tiny_model):
    data = _copy_data(tmp_path)
    path = data / "gsm8k" / "train.jsonl"
    lines = path.read_text().splitlines()
    lines[6] = '{"question": "half a row'
    path.write_text("\n".join(lines) + "\n")
    args = _real(tiny_model, data)
    expect_refusal(monkeypatch, capsys, tmp_path / "out", args, "train.jsonl:7")


def test_answer_index_out_of_range(monkeypatch, capsys, tmp_path, tiny_model):
    data = _copy_data(tmp_path)
    path = data / "medmcqa" / "validation.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[2]["answer"] = 4
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = _real(tiny_model, data, "tasks.train=[medmcqa]", "tasks.eval=[medmcqa, mmlu]")
    expect_refusal(monkeypatch, capsys, tmp_path / "out", args, "validation.jsonl:3")


def test_output_dir_of_another_sweep(monkeypatch, capsys, tmp_path):
    from rankscope.rundir import STORE_NAME
    from rankscope.store import Store

    out = tmp_path / "out"
    out.mkdir()
    store = Store(out / STORE_NAME)
    store.set_meta({"sweep_name": "someone-else"})
    store.close()
    before = sorted(p.name for p in out.iterdir())
    code, text = call_cli(monkeypatch, capsys, "run", "--set", "name=mine", "-o", str(out))
    assert code == 2 and "holds results of sweep 'someone-else'" in text and "--force" in text
    assert sorted(p.name for p in out.iterdir()) == before


@pytest.mark.parametrize(
    "content, needles",
    [
        (  # saved as latin-1: 'é' is the single byte 0xe9
            "name: x\n# réglages du modèle\ntrain:\n  epochs: 2\n".encode("latin-1"),
            ["line 2", "byte 0xe9", "byte offset 11", "must be UTF-8 text"],
        ),
        (
            b"name: x\ntrain:\n  epochs: 2\nmodel:\n  name: toy\ntrain:\n  batch_size: 4\n",
            ["key 'train' is given twice (lines 2 and 6); keep one"],
        ),
        (
            b"name: x\ntrain:\n  epochs: 2\n  batch_size: 4\n  epochs: 3\n",
            ["key 'train.epochs' is given twice (lines 3 and 5); keep one"],
        ),
    ],
    ids=["not-utf8", "duplicate-section", "duplicate-nested-key"],
)
def test_unreadable_config_file(monkeypatch, capsys, tmp_path, content, needles):
    """Neither an internal error (a non-UTF-8 byte) nor a silent last-one-wins (a key given
    twice): one message naming the file and line(s), from `plan` and `run` alike."""
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    code, text = call_cli(monkeypatch, capsys, "plan", str(bad))
    assert code == 2 and str(bad) in text and "Traceback" not in text, text
    for needle in needles:
        assert needle in text, text
    expect_refusal(monkeypatch, capsys, tmp_path / "out", [str(bad)], str(bad), *needles)


# ------------------------------------------------------------------ a sweep's results store
def _fake_sweep(root: Path) -> Path:
    """A finished two-run sweep dir (base + one LoRA run) written by hand: sweep.yaml, run
    dirs with config.yaml, DONE and eval files, and its store rebuilt from them. No training."""
    import yaml

    from rankscope.config import load_config
    from rankscope.pipeline import reindex_sweep
    from rankscope.sweep import write_sweep_file

    sets = ["tasks.train=[toy-med]", "methods.full.enabled=false", "methods.lora.ranks=[8]"]
    cfg = load_config(None, sets)
    write_sweep_file(cfg, root)
    for run_id, method, task, rank in (
        ("base", "base", None, None),
        ("toy-med__lora-r8-a16-lr1e-3__s0", "lora", "toy-med", 8),
    ):
        rd = root / "runs" / run_id
        (rd / "eval" / "val").mkdir(parents=True)
        spec = {"run_id": run_id, "method": method, "train_task": task, "rank": rank}
        spec |= {"alpha": 2 * rank if rank else None, "lr": 1e-3, "seed": 0, "variant": ""}
        info = {"run": spec, "config_hash": "h", "config": cfg.to_dict()}
        (rd / "config.yaml").write_text(yaml.safe_dump(info))
        (rd / "TRAINED").write_text("{}")
        for name in cfg.tasks.eval:
            pred = {"item_id": "1", "pred": "a", "gold": "a", "correct": 1}
            doc = {"task": name, "metrics": {"acc": [0.5, 0.1, 10]}, "predictions": [pred]}
            (rd / "eval" / f"{name}.json").write_text(json.dumps(doc))
            (rd / "eval" / "val" / f"{name}.json").write_text(json.dumps({**doc, "split": "val"}))
        (rd / "DONE").write_text("h")
    assert reindex_sweep(root) == 2
    return root


@pytest.fixture
def sweep(tmp_path) -> Path:
    return _fake_sweep(tmp_path / "sweep")


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` and its bytes (the store's -wal/-shm left out)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


@pytest.mark.parametrize("command", ["report", "status", "recommend", "export"])
def test_empty_store_is_refused_and_nothing_is_touched(monkeypatch, capsys, sweep, command):
    """A 0-byte results.sqlite is no store: `report` used to overwrite a good report with
    '0 of 0 runs' (figures deleted), `status` wrote empty tables into it."""
    (sweep / "report" / "figures").mkdir(parents=True)
    (sweep / "report" / "report.md").write_text("the good report")
    (sweep / "report" / "figures" / "a.png").write_bytes(b"png")
    (sweep / "results.sqlite").write_bytes(b"")
    before = _tree(sweep)
    code, text = call_cli(monkeypatch, capsys, command, str(sweep))
    assert code == 2, text
    assert f"{sweep / 'results.sqlite'}: empty file (0 bytes), not a rankscope results" in text
    assert "Traceback" not in text and "internal error" not in text
    assert _tree(sweep) == before


@pytest.mark.parametrize("force", [False, True])
def test_reindex_without_run_dirs_keeps_the_results(monkeypatch, capsys, sweep, force):
    """No run dir under runs/ but finished runs in the store: a rebuild would drop them all."""
    from helpers import store_rows

    shutil.rmtree(sweep / "runs")
    before = store_rows(sweep / "results.sqlite")
    args = ["reindex", str(sweep), *(["--force"] if force else [])]
    code, text = call_cli(monkeypatch, capsys, *args)
    after = store_rows(sweep / "results.sqlite")
    if force:
        assert code == 0 and after["runs"] == [], text
        return
    assert code == 2, text
    assert "holds 2 finished run(s), but no run directories were found in" in text
    assert "--force" in text and after == before


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "--bogus"],
        ["recommend", "x", "--max-retention-loss", "abc"],
        ["report", "a", "b"],
        ["run", "--set"],
        ["status", "--nope"],
        ["world", "build", "--seed", "one"],
        ["probe", "--steps", "many"],
        [],
        ["world"],
    ],
    ids=lambda a: " ".join(a) or "no-args",
)
def test_usage_errors_are_clicks_usage_message_exit_2(monkeypatch, capsys, args):
    """typer >= 0.22 vendors click: its usage errors are not click.ClickException, and came
    out as `internal error: NoSuchOption` with exit 1."""
    code, text = call_cli(monkeypatch, capsys, *args)
    assert code == 2, text
    assert "Usage:" in text or "Error" in text, text  # `--set` without a value: no usage line
    assert "internal error" not in text and "Traceback" not in text


CORRUPT = b"\x13\x37 garbage, not SQLite " * 200


@pytest.mark.parametrize(
    "command",
    [
        ["report"],
        ["recommend"],
        ["status"],
        ["export"],
        ["plan", "--no-costs", "-o"],
        ["analyze", "-o"],
        ["probe", "--validate"],
    ],
    ids=lambda c: c[0],
)
def test_corrupt_store_is_named_exit_2(monkeypatch, capsys, sweep, command):
    store = sweep / "results.sqlite"
    store.write_bytes(CORRUPT)
    before = _tree(sweep)
    code, text = call_cli(monkeypatch, capsys, *command, str(sweep))
    assert code == 2, text
    assert f"{store}: not a rankscope results store" in text and "reindex" in text
    assert "internal error" not in text
    assert _tree(sweep) == before


def test_reindex_moves_a_corrupt_store_aside_and_rebuilds(monkeypatch, capsys, sweep):
    from helpers import store_rows

    store = sweep / "results.sqlite"
    good = store_rows(store)
    store.write_bytes(CORRUPT)
    code, text = call_cli(monkeypatch, capsys, "reindex", str(sweep))
    assert code == 0, text
    assert f"moved it aside to {store}.corrupt-1" in text
    assert (sweep / "results.sqlite.corrupt-1").read_bytes() == CORRUPT
    assert store_rows(store) == good


@pytest.mark.parametrize(
    "sets, needles",
    [
        (["seeds=[0,1,0]"], ["--set seeds: 0 is listed twice"]),
        (["tasks.train=[toy-med,toy-med]"], ["--set tasks.train: 'toy-med' is listed twice"]),
        (
            ["tasks.eval=[toy-general,toy-med,toy-general]"],
            ["--set tasks.eval: 'toy-general' is listed twice"],
        ),
        (
            ["train.epochs=1", "train.epochs.x=2"],
            ["--set train.epochs.x: conflicts with --set train.epochs=1"],
        ),
        (
            ["train.epochs.x=2", "train.epochs=1"],
            ["--set train.epochs: conflicts with --set train.epochs.x=2"],
        ),
        (["methods.lora.lr=.inf"], ["--set methods.lora.lr: must be a finite number, got inf"]),
        (["methods.lora.lr=1e400"], ["--set methods.lora.lr: must be a finite number"]),
        (["methods.full.lr=[1e-3, .nan]"], ["--set methods.full.lr[1]: must be a finite"]),
        (  # a mapping given with --set updates the config's, rank by rank
            ["methods.lora.ranks=[8,16]", "methods.lora.lr={8: 1e-3}"],
            ["--set methods.lora.lr: no rate for rank 16; give every rank one"],
        ),
        (
            ["methods.lora.lr={8: 2e-3, 32: [5e-4, 0], 128: 1e-4}"],
            ["--set methods.lora.lr.32: must be > 0"],
        ),
        (["methods.lora.lr={8: .inf}"], ["methods.lora.lr.8: must be a finite number"]),
        (["methods.lora.lr={eight: 2e-3}"], ["methods.lora.lr key 'eight': expected int"]),
        (["train.epochs=.inf"], ["--set train.epochs: must be a finite number, got inf"]),
        (
            ["methods.lora.alpha=infr"],
            ["--set methods.lora.alpha: must be a finite number, got 'infr'"],
        ),
        (["train.epochs=0"], ["--set train.epochs: must be > 0"]),
        (
            ["tasks.eval=[toy-med]"],
            ["tasks.retention: 'toy-general' must also be listed", "(after --set tasks.eval="],
        ),
    ],
)
def test_bad_sets_are_named_as_sets(monkeypatch, capsys, tmp_path, sets, needles):
    """Duplicates, conflicting keys and non-finite numbers are refused (field named), and a
    --set mistake is blamed on the --set, not on the (embedded) config file."""
    args = [x for s in sets for x in ("--set", s)]
    for command in ("plan", "run"):
        code, text = call_cli(monkeypatch, capsys, command, *args, "-o", str(tmp_path / "o"))
        assert code == 2, text
        for needle in needles:
            assert needle in text, text
        assert "toy.yaml" not in text and "internal error" not in text
        assert not (tmp_path / "o").exists()


def test_a_file_mistake_is_still_blamed_on_the_file(monkeypatch, capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochs: .inf\n")
    code, text = call_cli(monkeypatch, capsys, "plan", str(cfg), "--set", "seeds=[1]")
    assert code == 2 and f"{cfg}: train.epochs: must be a finite number" in text, text


def test_plan_refuses_a_rank_run_refuses(monkeypatch, capsys, tmp_path, tiny_model):
    args = _real(tiny_model, FIXTURES, "methods.lora.ranks=[8,64]", "methods.lora.lr=1e-3")
    needle = "--set methods.lora.ranks: rank 64 exceeds min(d_in, d_out) = 32"
    code, text = call_cli(monkeypatch, capsys, "plan", *args)
    assert code == 2 and needle in text, text
    expect_refusal(monkeypatch, capsys, tmp_path / "out", args, needle)
    cfg = tmp_path / "big.yaml"  # from a file: the file is named
    cfg.write_text("methods:\n  lora:\n    ranks: [8, 64]\n")
    args = _real(tiny_model, FIXTURES)
    needle = f"{cfg}: methods.lora.ranks: rank 64 exceeds"
    code, text = call_cli(monkeypatch, capsys, "plan", str(cfg), *args)
    assert code == 2 and needle in text, text
    expect_refusal(monkeypatch, capsys, tmp_path / "out", [str(cfg), *args], needle)


def test_reindex_skips_a_run_with_a_damaged_file(monkeypatch, capsys, sweep):
    """Reindex is recovery: a run dir with a damaged file is skipped with a warning naming
    the file, the others are rebuilt; results the store still holds are not dropped for it
    (without --force)."""
    from helpers import store_rows

    bad = sweep / "runs" / "toy-med__lora-r8-a16-lr1e-3__s0" / "eval" / "val" / "toy-med.json"
    bad.write_text('{"task": "toy-med", "metr')
    before = store_rows(sweep / "results.sqlite")
    code, text = call_cli(monkeypatch, capsys, "reindex", str(sweep))
    assert code == 2 and f"{bad}: unreadable results file" in text and "--force" in text, text
    assert store_rows(sweep / "results.sqlite") == before
    (sweep / "results.sqlite").unlink()  # the store lost: rebuild what can be rebuilt
    code, text = call_cli(monkeypatch, capsys, "reindex", str(sweep))
    assert code == 0, text
    assert f"skipped run toy-med__lora-r8-a16-lr1e-3__s0: {bad}: unreadable" in text
    assert "rebuilt from 1 run directory" in text
    assert [r[0] for r in store_rows(sweep / "results.sqlite")["runs"]] == ["base"]


@pytest.mark.parametrize(
    "case", ["run-o-file", "run-report-file", "json-dir", "csv-file", "report-file"]
)
def test_unwritable_output_paths_are_refused_up_front(monkeypatch, capsys, sweep, case):
    blocker = {
        "run-o-file": sweep / "afile",
        "run-report-file": sweep / "report",
        "json-dir": sweep / "adir",
        "csv-file": sweep / "csv",
        "report-file": sweep / "report",
    }[case]
    if case == "json-dir":
        blocker.mkdir()
    else:
        blocker.write_text("not a directory")
    args = {
        "run-o-file": ["run", "-o", str(blocker)],
        "run-report-file": ["run", "-o", str(sweep), "--set", "name=toy"],
        "json-dir": ["recommend", str(sweep), "--json", str(blocker)],
        "csv-file": ["export", str(sweep)],
        "report-file": ["report", str(sweep)],
    }[case]
    before = _tree(sweep)
    code, text = call_cli(monkeypatch, capsys, *args)
    assert code == 2 and str(blocker) in text, text
    assert "is a file, not a directory" in text or "is a directory; give a file path" in text
    assert "internal error" not in text
    assert _tree(sweep) == before
    assert "base model" not in text  # refused before any work (recommend printed first)
