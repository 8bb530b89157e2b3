"""`nestor ps`: run PowerShell (the seed's Hyper-V and networking cmdlets) against this host."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..errors import InvalidInput
from .context import Ctx, pass_ctx
from .output import OUTPUT, emit_json, escape_controls


def _script(command: str | None, file: str | None) -> str:
    if command is not None and file is not None:
        raise InvalidInput("give -c COMMAND or a FILE, not both", hint="nestor ps -c \"Get-VM\"")
    if command is not None:
        return command
    if file is None or file == "-":
        if sys.stdin.isatty():
            raise InvalidInput("no script given", hint="nestor ps -c \"Get-VM\", nestor ps FILE.ps1, or a script on stdin")
        path = None
    else:
        path = Path(file)
    from ..files import read_capped
    from ..ps.parse import MAX_SCRIPT

    # FIFOs too (`nestor ps <(…)`), but never more than MAX_SCRIPT bytes (`nestor ps /dev/zero`)
    data = read_capped(path, MAX_SCRIPT, "script", hint="a UTF-8 text file of at most 1 MiB", regular=False)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"script '{file or '<stdin>'}' is not UTF-8 text (byte {exc.start} is invalid)",
                           hint="save the script as UTF-8") from None


def _cmdlets() -> None:
    from ..ps.cmdlets import CMDLETS

    width = max(len(c.name) for c in CMDLETS)
    for c in CMDLETS:
        click.echo(f"{c.name.ljust(width)}  {c.signature.native}")


@click.command("ps", context_settings={"ignore_unknown_options": False})
@click.argument("file", required=False)
@click.option("-c", "--command", default=None, help="the PowerShell to run")
@click.option("--cmdlets", "list_cmdlets", is_flag=True, help="list the accepted cmdlets and their nestor commands")
@OUTPUT
@pass_ctx
def ps(ctx: Ctx, file: str | None, command: str | None, list_cmdlets: bool, output: str) -> None:
    """Run PowerShell: -c COMMAND, a FILE.ps1, or stdin (the seed's cmdlets, verbatim)."""
    if list_cmdlets:
        _cmdlets()
        return
    from ..ps import execute
    from ..ps.objects import render, to_json

    script = _script(command, file)

    def note(message: str) -> None:
        click.echo(escape_controls(message), err=True)

    collected: list[Any] = []
    for _statement, objects in execute(ctx.local, script, note):
        if output == "json":
            collected += to_json(objects)
        elif objects:
            click.echo(escape_controls(render(objects)) + "\n")  # cells may hold a guest's text (a DHCP hostname)
    if output == "json":
        emit_json(collected)
