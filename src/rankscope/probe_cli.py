"""The `rankscope probe` command (registered by `rankscope.cli`): its options and output.

Kept apart from cli.py so that the command line module stays small; like every command it
imports torch only when it runs (`rankscope.probe`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from rankscope.errors import RankscopeError

console = Console(stderr=True)


def probe_command(
    config: Annotated[
        Path | None, typer.Argument(help="Sweep config YAML (default: the embedded toy sweep).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override a key, e.g. --set seeds=[0] (repeatable)."),
    ] = None,
    steps: Annotated[int, typer.Option(help="Gradient steps per train task and seed.")] = 32,
    energy: Annotated[
        float, typer.Option(help="Energy fraction (of Σσ²) a module's predicted rank holds.")
    ] = 0.9,
    compare: Annotated[
        str | None, typer.Option(help="peft's predictors beside the probe: eva,adalora.")
    ] = None,
    budget_rank: Annotated[
        int | None,
        typer.Option(help="Rank budget EVA and AdaLoRA redistribute (default: grid's middle)."),
    ] = None,
    validate: Annotated[
        Path | None,
        typer.Option(help="A finished sweep's directory: hits and rank errors against it."),
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write JSON here.")] = None,
):
    """Predict each train task's LoRA rank before the sweep: a short full-fine-tuning
    gradient probe (no optimizer), the 90 %-energy rank of each target module's summed
    gradient, median over modules, rounded up to the config's rank grid."""
    from rankscope import probe as probing
    from rankscope import probe_validate as pv
    from rankscope.config import load_config

    cfg = load_config(config, list(set_ or []))
    opts = probing.ProbeOptions(steps, energy, probing.parse_compare(compare), budget_rank)
    probing.check_config(cfg)
    truth = pv.load_truth(validate) if validate is not None else None
    if truth is not None:
        pv.check_tasks(truth, cfg.tasks.train, validate)
    if json_path is not None and json_path.is_dir():
        raise RankscopeError(f"--json: {json_path} is a directory; give a file path")

    def done(task: str, seed: int, p: probing.Prediction) -> None:
        console.print(f"{task} seed {seed}: {p.predictor} -> {p.choice} ({p.seconds:.0f} s)")

    rows = probing.run_probe(cfg, opts, done)
    doc = probing.to_json(cfg, opts, rows)
    title = f"rank predictions for {cfg.name} ({opts.steps} steps, {opts.energy:g} energy, "
    Console(width=max(160, Console().width)).print(pv.table(rows, truth, title + "median)"))
    if truth is not None:
        result = pv.scores(rows, truth, doc["full_rank"])
        for line in pv.summary(result):
            console.print(line, soft_wrap=True)
        doc["validation"] = {"sweep": str(validate), "scores": result, "truth": pv.as_dict(truth)}
    if json_path is not None:
        from rankscope.rundir import write_atomic

        write_atomic(json_path, json.dumps(doc, indent=2) + "\n")
        console.print(f"predictions: [green]{json_path}[/green]")
