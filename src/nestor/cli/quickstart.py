from __future__ import annotations

import sys

import click

from ..policy import depth as depth_rules
from ..quickstart import Quickstart
from .context import Ctx, pass_ctx
from .output import OUTPUT, emit_json, progress
from .tree import print_tree


@click.command("quickstart")
@click.option("--keep", is_flag=True, help="leave the lab (l1, l2, …) running")
@click.option("--teardown", is_flag=True, help="only remove what a kept quickstart left")
@click.option("--depth", type=int, default=depth_rules.DEFAULT_DEPTH, show_default=True,
              help=f"levels below this host: L0 → l1 → … → lN ({depth_rules.MIN_DEPTH} to {depth_rules.MAX_DEPTH}, "
                   "where memory allows)")
@click.option("--inside", is_flag=True,
              help="bring up only the part of the lab below this level (run inside a nested host)")
@click.option("--show-lab", is_flag=True, help="print the lab file the quickstart brings up, and do nothing")
@OUTPUT
@pass_ctx
def quickstart(ctx: Ctx, keep: bool, teardown: bool, depth: int, inside: bool, show_lab: bool, output: str) -> None:
    """The main job: L0 → l1 (nesting on) → … → lN as a lab shipped with nestor; the deepest pings L0."""
    if show_lab:
        from ..quickstart import lab_text

        click.echo(lab_text(depth), nl=False)
        return
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
    click.echo("quickstart: ok" + (" (kept: nestor lab status quickstart, nestor tree)" if keep else ""))
    sys.stdout.flush()


def _inside(ctx: Ctx, depth: int, output: str) -> None:
    """In a nested host at level K: the quickstart lab's lK+1 … lN below it."""
    import time
    from collections.abc import Iterator
    from contextlib import contextmanager

    from ..host import facts
    from ..quickstart import Result, run_inside

    level = facts.parse_level(facts._read("/proc/cmdline"))
    result = Result()

    @contextmanager
    def step(name: str) -> Iterator[None]:
        progress(f"{name} …")
        start = time.monotonic()
        yield
        result.steps.append((name, time.monotonic() - start))

    run_inside(ctx.home, level, depth, step, result, progress)
    result.ok = True
    if output == "json":
        emit_json(result.to_json())
        return
    for name, seconds in result.steps:
        click.echo(f"{name:<32} {seconds:6.1f} s")
    click.echo("quickstart --inside: ok")
