"""`rankscope plan`'s parts (registered by `rankscope.cli`): the model-shape check `run`
makes, the runs' states, the cost estimate and the table. Kept apart so cli.py stays small."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from rankscope.errors import RankscopeError
from rankscope.rundir import SweepDir


def check_fits(cfg) -> None:
    """What `run` refuses before it writes anything: a LoRA target that matches no layer,
    a rank above a target layer's min(d_in, d_out). Skipped when the model's shapes cannot
    be found offline (the cost estimate then says why)."""
    from rankscope import methods
    from rankscope.estimate import meta_model

    checking = [m for m in methods.METHODS.values() if m.checks_shapes and m.enabled(cfg)]
    if not checking:
        return
    try:
        model = meta_model(cfg.model)
    except RankscopeError:
        return
    for method in checking:
        method.preflight(cfg, model)


def plan_states(cfg, runs, state: dict) -> dict[str, str]:
    """Each run's state: run dirs first (finished remote work not yet ingested), then the
    store; none before the sweep has a store (or while it is an empty file)."""
    store_path = SweepDir(cfg.out_dir).store_path
    if not store_path.is_file() or store_path.stat().st_size == 0:
        return {}
    from rankscope.due import shown_state
    from rankscope.store import Store

    state["store"] = store_path  # named if a query finds it damaged
    store = Store(store_path, existing=True)
    try:
        return {r.run_id: shown_state(store, r, cfg).value for r in runs}
    finally:
        store.close()


def plan_table(cfg, runs, states: dict[str, str], est: dict) -> Table:
    from rankscope.estimate import human

    table = Table(title=f"sweep {cfg.name}: {len(runs)} runs x {len(cfg.tasks.eval)} eval tasks")
    table.add_column("run id", no_wrap=True, min_width=max(len(r.run_id) for r in runs))
    cols = ["method", "train task", "rank", "alpha", "lr", "seed", "status"]
    cols += ["trainable", "GPU-h (est.)"] if est else []
    for col in cols:
        right = col.startswith(("trainable", "GPU"))
        table.add_column(col, justify="right" if right else "left", no_wrap=True)
    for r in runs:
        row = [
            r.run_id,
            r.method,
            r.train_task or "-",
            str(r.rank or "-"),
            f"{r.alpha:g}" if r.alpha else "-",
            f"{r.lr:g}" if r.lr else "-",
            str(r.seed),
            states.get(r.run_id, "pending"),
        ]
        if est:
            c = est[r.run_id]
            row += [
                f"{human(c.trainable)} ({100 * c.trainable / c.total:.3g}%)",
                f"{c.gpu_hours:.3g}",
            ]
        table.add_row(*row)
    return table


def estimate(console: Console, cfg, runs, peak_tflops: float, mfu: float) -> dict:
    """Costs per run, or {} with a note when the model's config cannot be found offline."""
    from rankscope.estimate import sweep_costs

    try:
        return sweep_costs(cfg, runs, peak_tflops, mfu)
    except RankscopeError as e:
        console.print(f"[yellow]no cost estimate:[/yellow] {e}")
        return {}
