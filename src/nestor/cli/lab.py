"""`nestor lab …`: a tree of levels from one YAML file (docs/labs.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..lab.plan import SYMBOL, Op
from ..lab.spec import level_name
from ..service.types import to_json
from .context import Ctx, pass_ctx
from .output import OUTPUT, emit_json, progress, rows_out

LAB_FILE = click.argument("file", type=click.Path(path_type=Path, dir_okay=False))


def _text(file: Path) -> str:
    """The lab file's text, checked here (errors name FILE as given); the service is sent the text
    (through the API too: a server opens no file of the caller's naming)."""
    from ..lab import file as lab_file

    text = lab_file.read_text(file)
    lab_file.parse(text, str(file))
    return text


@click.group()
def lab() -> None:
    """Labs: switches, NATs and VMs at every level, from one file."""


def _print_plan(data: dict[str, Any]) -> None:
    current = None
    for action in data["actions"]:
        if action["level"] != current:
            current = action["level"]
            click.echo(f"{level_name(current)}:")
        op = Op(action["op"])
        click.echo(f"  {SYMBOL[op]:>3} {action['kind']} {action['name']}: {op.value} ({action['reason']})")
    counts = data["counts"]
    click.echo(f"plan: {counts['create']} to create, {counts['change']} to change, {counts['replace']} to replace, "
               f"{counts['start']} to start, {counts['remove']} to remove, {counts['keep']} unchanged")


@lab.command("plan")
@LAB_FILE
@OUTPUT
@pass_ctx
def plan_cmd(ctx: Ctx, file: Path, output: str) -> None:
    """What `lab up FILE` would do, level by level, and why; changes nothing."""
    from ..lab.session import refused

    text = _text(file)  # a bad file is the error, before any home is opened
    planned = ctx.service.lab_plan(text, str(file))
    data = to_json(planned)
    if output == "json":
        emit_json(data)
    else:
        _print_plan(data)
        for problem in planned.problems:
            click.echo(f"refused: {problem.subject}: {problem.message} [{problem.rule}]; fix: {problem.fix}")
    if planned.problems:
        raise refused(planned)


@lab.command("up")
@LAB_FILE
@OUTPUT
@pass_ctx
def up_cmd(ctx: Ctx, file: Path, output: str) -> None:
    """Reconcile every level to FILE (a second run has nothing to do)."""
    from ..lab.session import failed

    if not file.is_file():
        from ..errors import InvalidInput

        raise InvalidInput(f"no lab file {file}", hint="give the path of a lab file (docs/labs.md)")
    text = _text(file)
    result = ctx.service.lab_up(text, progress, source=str(file.resolve()))
    if output == "json":
        emit_json({k: v for k, v in to_json(result).items() if k != "up_to_date"})
    elif result.up_to_date:
        click.echo(f"lab '{result.lab}': nothing to do, every level is as in the file")
    else:
        click.echo(f"lab '{result.lab}': {result.changes} change{'s' if result.changes != 1 else ''} made")
    if result.failed:
        raise failed(result, result.lab, file)


@lab.command("status")
@click.argument("name", required=False)
@OUTPUT
@pass_ctx
def status_cmd(ctx: Ctx, name: str | None, output: str) -> None:
    """The lab's tree (every lab without NAME) with each object's state."""
    hv = ctx.service
    names = [name] if name else [r.name for r in hv.lab_list()]
    data = [to_json(hv.lab_status(n)) for n in names]
    if output == "json":
        emit_json(data[0] if name else data)
        return
    if not data:
        click.echo("no labs")
    for one in data:
        click.echo(f"lab {one['lab']}")
        for level in one["levels"]:
            reach = "" if level["reachable"] else f" (not reachable: {level['error']})"
            click.echo(f"  {level['level_name']}{reach}")
            for s in level["switches"]:
                click.echo(f"    switch {s['name']} {s['type']} {s['address'] or ''} {s['state']}".rstrip())
            for n in level["nats"]:
                click.echo(f"    nat {n['name']} {n['prefix']} on {n['switch']} {n['state']}")
            for vm in level["vms"]:
                addr = ",".join(vm["addresses"]) or "-"
                click.echo(f"    vm {vm['path']} {vm['image']} {vm['state']} {addr}")


@lab.command("list")
@OUTPUT
@pass_ctx
def list_cmd(ctx: Ctx, output: str) -> None:
    """The labs of this home."""
    rows_out(to_json(ctx.service.lab_list()), output, ["name", "objects", "netns", "file"], empty="no labs")


@lab.command("down")
@click.argument("name")
@OUTPUT
@pass_ctx
def down_cmd(ctx: Ctx, name: str, output: str) -> None:
    """Remove everything lab NAME made, at every level, and nothing else."""
    removed = ctx.service.lab_down(name, progress).removed
    if output == "json":
        emit_json({"lab": name, "removed": to_json(removed)})
    else:
        click.echo(f"lab '{name}': removed {len(removed)} object{'s' if len(removed) != 1 else ''}")


@lab.command("inventory")
@click.argument("name")
@click.option("-o", "--output", type=click.Choice(["ansible", "json"]), default="ansible", help="output format")
@pass_ctx
def inventory_cmd(ctx: Ctx, name: str, output: str) -> None:
    """The lab's VMs and addresses: Ansible's JSON inventory, or plain JSON."""
    data = ctx.service.lab_inventory(name)
    emit_json(to_json(data.hosts) if output == "json" else data.ansible)
    sys.stdout.flush()


@lab.command("save")
@click.argument("name")
@OUTPUT
@pass_ctx
def save_cmd(ctx: Ctx, name: str, output: str) -> None:
    """Save every running VM of lab NAME, deepest first (refused before anything is saved if one cannot be)."""
    saved = ctx.service.lab_save(name, progress).saved
    if output == "json":
        emit_json({"lab": name, "saved": to_json(saved)})
    elif not saved:
        click.echo(f"lab '{name}': nothing running to save")
    else:
        click.echo(f"lab '{name}': saved {len(saved)} VM{'s' if len(saved) != 1 else ''} "
                   f"({', '.join(s.path for s in saved)}); nestor lab restore {name} resumes them")


@lab.command("restore")
@click.argument("name")
@OUTPUT
@pass_ctx
def restore_cmd(ctx: Ctx, name: str, output: str) -> None:
    """Resume the saved VMs of lab NAME, top down (each level once its nestor answers)."""
    from ..errors import StateError

    done = ctx.service.lab_restore(name, progress)
    if output == "json":
        emit_json({"lab": name, "restored": done.restored, "failed": done.failed})
    elif not done.restored and not done.failed:
        click.echo(f"lab '{name}': nothing saved to restore")
    else:
        click.echo(f"lab '{name}': restored {len(done.restored)} VM{'s' if len(done.restored) != 1 else ''}"
                   + (f" ({', '.join(done.restored)})" if done.restored else ""))
    if done.failed:
        raise StateError(f"lab '{name}': {len(done.failed)} failed: " + "; ".join(done.failed),
                         hint=f"nestor lab status {name}; nestor lab restore {name} again resumes what is still saved")
