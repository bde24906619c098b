"""The grid: stable readable run ids, one shared base row, hashes that track what matters."""

from __future__ import annotations

from rankscope.config import load_config
from rankscope.plan import make_plan


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
    assert lora8.config_hash(a) != [r for r in rb if r.rank == 8][0].config_hash(b)
    # where the cache lives and which *other* ranks exist do not change this run
    assert lora8.config_hash(a) == [r for r in rc if r.rank == 8][0].config_hash(c)
    # the base row does not depend on training settings
    assert ra[0].config_hash(a) == rb[0].config_hash(b)
