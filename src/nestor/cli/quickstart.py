from __future__ import annotations

import sys

import click

from ..policy import depth as depth_rules
from ..quickstart import Quickstart
from .context import Ctx, pass_ctx
from .output import OUTPUT, emit_json, progress
from .tree import print_tree


@click.command("quickstart")
@click.option("--keep", is_flag=True, help="leave l1 and l2 running")
@click.option("--teardown", is_flag=True, help="only remove what a kept quickstart left")
@click.option("--depth", type=int, default=depth_rules.DEFAULT_DEPTH, show_default=True,
              help=f"levels below this host: L0 → l1 → … → lN ({depth_rules.MIN_DEPTH} to {depth_rules.MAX_DEPTH}, "
                   "where memory allows)")
@click.option("--inside", is_flag=True,
              help="run the chain below this level only (the step each level runs for the level below)")
@OUTPUT
@pass_ctx
def quickstart(ctx: Ctx, keep: bool, teardown: bool, depth: int, inside: bool, output: str) -> None:
    """The main job: L0 → l1 (nesting on) → … → lN, each level driven by nestor; the deepest pings L0."""
    if inside:
        _inside(ctx, depth, output)
        return
    job = Quickstart(ctx.home, progress, depth=depth)
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


def _inside(ctx: Ctx, depth: int, output: str) -> None:
    """In a nested host at level K: lK+1 … lN below it, as the quickstart at L0 makes them."""
    import time

    from ..host import facts
    from ..quickstart import Result, run_inside
    from ..service import Service

    level = facts.parse_level(facts._read("/proc/cmdline"))
    result = Result()
    service = Service(ctx.home)

    from contextlib import contextmanager

    @contextmanager
    def step(name: str):  # type: ignore[no-untyped-def]
        progress(f"{name} …")
        start = time.monotonic()
        yield
        result.steps.append((name, time.monotonic() - start))

    run_inside(service, level, depth, step, result.facts)
    result.ok = True
    if output == "json":
        emit_json(result.to_json())
        return
    for name, seconds in result.steps:
        click.echo(f"{name:<32} {seconds:6.1f} s")
    click.echo("quickstart --inside: ok")
