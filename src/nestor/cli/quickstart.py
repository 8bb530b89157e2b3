from __future__ import annotations

import sys

import click

from ..quickstart import Quickstart
from .context import Ctx, pass_ctx
from .output import OUTPUT, emit_json, progress
from .tree import print_tree


@click.command("quickstart")
@click.option("--keep", is_flag=True, help="leave l1 and l2 running")
@click.option("--teardown", is_flag=True, help="only remove what a kept quickstart left")
@OUTPUT
@pass_ctx
def quickstart(ctx: Ctx, keep: bool, teardown: bool, output: str) -> None:
    """The main job: L0 → L1 (nesting on) → L2, each level driven by nestor."""
    job = Quickstart(ctx.home, progress)
    if teardown:
        job.teardown()
        click.echo("quickstart: removed")
        return
    result = job.run(keep=keep)
    if output == "json":
        emit_json(result.to_json())
        return
    if result.tree:
        print_tree(result.tree)
    click.echo("")
    for name, seconds in result.steps:
        click.echo(f"{name:<32} {seconds:6.1f} s")
    click.echo(f"{'total':<32} {sum(s for _, s in result.steps):6.1f} s")
    for key, value in result.facts.items():
        click.echo(f"{key}: {value}")
    click.echo("quickstart: ok" + (" (kept: nestor vm show l1, nestor tree)" if keep else ""))
    sys.stdout.flush()
