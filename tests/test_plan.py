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
    assert len(runs) == 1 + n_train * len(cfg.seeds) * (1 + len(cfg.methods.lora.ranks))
    assert "toy-med__lora-r32-a64-lr1e-3__s2" in ids and "toy-legal__full-lr5e-4__s0" in ids
    assert "toy-med__lora-r128-a256-lr2.5e-4__s0" in ids  # a rate per rank
    assert len(set(ids)) == len(ids)


def test_seeds_and_alpha_rule_in_ids():
    cfg = load_config(
        None,
        [
            "seeds=[0,1]",
            "methods.lora.alpha=16",
            "methods.lora.ranks=[8]",
            "tasks.train=[toy-med]",
            "methods.lora.variants=[rslora]",
            "methods.lora.lr=5e-4",
            "methods.full.lr=5e-4",
        ],
    )
    ids = [r.run_id for r in make_plan(cfg)]
    assert ids == [
        "base",
        "toy-med__full-lr5e-4__s0",
        "toy-med__rslora-r8-a16-lr5e-4__s0",
        "toy-med__full-lr5e-4__s1",
        "toy-med__rslora-r8-a16-lr5e-4__s1",
    ]


def test_lr_alpha_and_variants_are_axes_with_readable_ids():
    cfg = load_config(
        None,
        [
            "seeds=[1]",
            "tasks.train=[toy-med]",
            "methods.lora.ranks=[32]",
            "methods.lora.alpha=[2r,16]",
            "methods.lora.lr=[1e-4,5e-4]",
            "methods.lora.variants=[lora,dora]",
            "methods.full.lr=[5e-5,2.5e-4]",
        ],
    )
    runs = make_plan(cfg)
    ids = [r.run_id for r in runs]
    assert ids[:3] == ["base", "toy-med__full-lr5e-5__s1", "toy-med__full-lr2.5e-4__s1"]
    assert "toy-med__lora-r32-a16-lr5e-4__s1" in ids
    assert "toy-med__dora-r32-a64-lr1e-4__s1" in ids
    assert len(ids) == 1 + 2 + 2 * 2 * 2 and len(set(ids)) == len(ids)
    dora = [r for r in runs if r.variant == "dora"]
    assert {(r.rank, r.alpha, r.lr) for r in dora} == {
        (32, a, lr) for a in (64.0, 16.0) for lr in (1e-4, 5e-4)
    }
    # adding an lr to the list renames no existing run
    more = load_config(
        None,
        [
            *[f for f in []],
            "seeds=[1]",
            "tasks.train=[toy-med]",
            "methods.lora.ranks=[32]",
            "methods.lora.alpha=[2r,16]",
            "methods.lora.lr=[1e-4,5e-4,1e-3]",
            "methods.lora.variants=[lora,dora]",
            "methods.full.lr=[5e-5,2.5e-4]",
        ],
    )
    assert set(ids) < {r.run_id for r in make_plan(more)}


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
            "methods.lora.variants=[rslora-dora-pissa]",
        ],
    )
    got = {(r.run_id, config_hash(r, c)) for c in (plain, variant) for r in make_plan(c)[:3]}
    # session 12: the toy world's identity names its tasks version (2: MCQs train on the
    # answer letter alone), and the toy config trains each configuration at its own rate
    assert got == {
        ("base", "89844c2236a8e36d"),
        ("toy-med__full-lr5e-4__s0", "4ad941b35a1d08d7"),
        ("toy-med__lora-r8-a16-lr2e-3__s0", "c9a70dd8d8d26d71"),
        ("base", "ba2969735754b178"),
        ("toy-med__full-lr5e-4__s1", "98f46b5a1c4f55e5"),
        ("toy-med__rslora-dora-pissa-r8-a16-lr2e-3__s1", "6e61be93de4e9447"),
    }


def test_a_subset_and_decontamination_are_part_of_the_hash():
    """A run on a subset records how the subset was drawn (a cached run on the first N items,
    the old rule, is not reused), and a trained run the rule that dropped its contaminated
    training items and the eval tasks it was checked against."""
    from rankscope.decontam import RULE
    from rankscope.plan import identity
    from rankscope.tasks.base import SUBSET_RULE

    sets = ["tasks.train=[toy-med]", "tasks.max_eval_items=64", "tasks.max_train_items=128"]
    cfg = load_config(None, sets)
    base, full = make_plan(cfg)[:2]
    assert identity(base, cfg)["eval"]["subset"] == SUBSET_RULE
    assert "train_data" not in identity(base, cfg)  # the base model trains on nothing
    assert identity(full, cfg)["train_data"] == {
        "decontam": RULE,
        "against": sorted(cfg.tasks.eval),
        "subset": SUBSET_RULE,
    }
    fewer = load_config(None, [*sets, "tasks.eval=[toy-general, toy-med]"])
    assert config_hash(full, cfg) != config_hash(full, fewer)  # other items checked against
    assert config_hash(base, cfg) == config_hash(base, fewer)
    whole = load_config(None, ["tasks.train=[toy-med]"])
    assert "subset" not in identity(base, whole)["eval"]
    assert "subset" not in identity(full, whole)["train_data"]


def test_variant_is_part_of_the_id_and_a_typed_column():
    cfg = load_config(
        None, ["methods.lora.variants=[gaussian]", "methods.lora.ranks=[4]", "methods.lora.lr=1e-3"]
    )
    lora = [r for r in make_plan(cfg) if r.method == "lora"]
    assert {(r.variant, r.rank, r.alpha) for r in lora} == {("gaussian", 4, 8.0)}
    assert all(r.run_id.split("__")[1] == "gaussian-r4-a8-lr1e-3" for r in lora)


def test_two_alpha_rules_that_agree_at_a_rank_run_it_once():
    cfg = load_config(None, ["methods.lora.alpha=[2r,16]", "methods.lora.ranks=[8,32]"])
    lora = [r for r in make_plan(cfg) if r.method == "lora" and r.seed == 0]
    per_task = {(r.rank, r.alpha) for r in lora}
    assert per_task == {(8, 16.0), (32, 64.0), (32, 16.0)}
    assert len(lora) == 3 * len(cfg.tasks.train)


def test_the_fast_training_path_is_in_the_hash_only_when_on():
    """configs/toy.yaml turns packing and completion-only logits off: its runs keep the hashes
    pinned above (made before the options existed); turning either on is another run."""
    plain = load_config()
    assert not plain.train.packing and not plain.train.completion_logits
    lora = [r for r in make_plan(plain) if r.method == "lora"][0]
    base = config_hash(lora, plain)
    for key in ("packing", "completion_logits"):
        on = load_config(None, [f"train.{key}=true"])
        assert config_hash(lora, on) != base, key


def test_a_rate_per_rank_trains_each_rank_at_its_own_rates_and_keeps_run_ids():
    """`methods.lora.lr` as a mapping: each rank runs its own rates (a list is an axis for
    that rank only), and a run of a given rank and rate has the id and hash it has when the
    same rate is given for every rank."""
    base = ["seeds=[0]", "tasks.train=[toy-med]", "methods.full.enabled=false"]
    cfg = load_config(None, [*base, "methods.lora.lr={8: 2e-3, 32: [5e-4, 1e-3], 128: 2.5e-4}"])
    lora = [r for r in make_plan(cfg) if r.method == "lora"]
    assert [(r.rank, r.lr) for r in lora] == [(8, 2e-3), (32, 5e-4), (32, 1e-3), (128, 2.5e-4)]
    assert [r.run_id for r in lora][:2] == [
        "toy-med__lora-r8-a16-lr2e-3__s0",
        "toy-med__lora-r32-a64-lr5e-4__s0",
    ]
    flat = load_config(None, [*base, "methods.lora.lr=2e-3"])
    same = next(r for r in make_plan(flat) if r.run_id == lora[0].run_id)
    assert config_hash(same, flat) == config_hash(lora[0], cfg)
