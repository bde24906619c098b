"""The grid: stable readable run ids, one shared base row, hashes that track what matters."""

from __future__ import annotations

from rankscope.config import load_config
from rankscope.plan import config_hash, make_plan


def test_default_grid_shape_and_ids():
    cfg = load_config()
    runs = make_plan(cfg)
    ids = [r.run_id for r in runs]
    assert ids[0] == "base" and sum(r.method == "base" for r in runs) == 1
    n_train = len(cfg.tasks.train)
    assert len(runs) == 1 + n_train * (1 + len(cfg.methods.lora.ranks))
    assert "toy-arith__lora-r16-a32__s0" in ids and "toy-med__full__s0" in ids
    assert len(set(ids)) == len(ids)


def test_seeds_and_alpha_rule_in_ids():
    cfg = load_config(
        None,
        [
            "seeds=[0,1]",
            "methods.lora.alpha=16",
            "methods.lora.ranks=[8]",
            "tasks.train=[toy-med]",
            "methods.lora.use_rslora=true",
        ],
    )
    ids = [r.run_id for r in make_plan(cfg)]
    assert ids == [
        "base",
        "toy-med__full__s0",
        "toy-med__lora-r8-a16-rslora__s0",
        "toy-med__full__s1",
        "toy-med__lora-r8-a16-rslora__s1",
    ]


def test_config_hash_tracks_relevant_fields_only():
    a = load_config(None, ["tasks.train=[toy-med]"])
    b = load_config(None, ["tasks.train=[toy-med]", "train.epochs=2"])
    c = load_config(
        None, ["tasks.train=[toy-med]", "model.cache_dir=/elsewhere", "methods.lora.ranks=[8]"]
    )
    ra, rb, rc = (make_plan(x) for x in (a, b, c))
    lora8 = [r for r in ra if r.rank == 8][0]
    assert config_hash(lora8, a) != config_hash([r for r in rb if r.rank == 8][0], b)
    # where the cache lives and which *other* ranks exist do not change this run
    assert config_hash(lora8, a) == config_hash([r for r in rc if r.rank == 8][0], c)
    # the base row does not depend on training settings
    assert config_hash(ra[0], a) == config_hash(rb[0], b)


def test_config_hashes_are_pinned():
    """A changed hash reruns every finished run: the hashes of the default grid and of a
    LoRA variant are fixed here, so a refactor that changes one fails loudly."""
    plain = load_config()
    variant = load_config(
        None,
        [
            "seeds=[1]",
            "methods.lora.use_rslora=true",
            "methods.lora.use_dora=true",
            "methods.lora.init=pissa",
        ],
    )
    got = {(r.run_id, config_hash(r, c)) for c in (plain, variant) for r in make_plan(c)[:3]}
    assert got == {
        ("base", "358de2075f6b1a6f"),
        ("toy-arith__full__s0", "0dc91dcd407049e4"),
        ("toy-arith__lora-r8-a16__s0", "09cd4963b1ce0611"),
        ("base", "bda3da32e7601f56"),
        ("toy-arith__full__s1", "d73160c0742e8cd2"),
        ("toy-arith__lora-r8-a16-rslora-dora-pissa__s1", "af32303eea5a7132"),
    }


def test_variant_is_part_of_the_id_and_a_typed_column():
    cfg = load_config(None, ["methods.lora.init=gaussian", "methods.lora.ranks=[4]"])
    lora = [r for r in make_plan(cfg) if r.method == "lora"]
    assert {(r.variant, r.rank, r.alpha) for r in lora} == {("gaussian", 4, 8.0)}
    assert all(r.run_id.split("__")[1] == "lora-r4-a8-gaussian" for r in lora)
