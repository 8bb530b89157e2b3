"""Run a script: plan it whole (parse, bind, check every pipeline), then run statement by statement.

Objects flow through a pipeline as in PowerShell: the first command runs once, each later
command runs once per object the one before it wrote (none: it does not run). The first error
stops the script (PowerShell's ``$ErrorActionPreference = 'Stop'``): the statements before it
have run, and the error names the line it happened on.

A command runs on the level its -ComputerName names (a VM path: Hyper-V's "run this cmdlet on
that host"), else on the level of the pipeline object it was given, else on this host. Objects
written at a level below carry its path as ComputerName, so `Get-VM -ComputerName l1 | Stop-VM`
stops l1's VMs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import InvalidInput, NestorError
from ..hypervisor import level_error
from ..service import Service
from .cmdlets import BY_NAME, Cmdlet, lookup
from .objects import PSObject
from .parse import Command, Statement, parse
from .session import Note, Session


@dataclass(frozen=True)
class Planned:
    statement: Statement
    cmdlets: tuple[Cmdlet, ...]


def plan(script: str) -> list[Planned]:
    """Everything that can be checked without the host: raises InvalidInput before any change."""
    planned = []
    for statement in parse(script, lookup):
        cmdlets = tuple(BY_NAME[c.name.lower()] for c in statement.commands)
        for i, (cmd, cmdlet) in enumerate(zip(statement.commands, cmdlets, strict=True)):
            if cmdlet.check is not None:
                cmdlet.check(cmd)
            if i == 0:
                continue
            before, before_cmd = cmdlets[i - 1], statement.commands[i - 1]
            writes = before.outputs if not before.passthru or before_cmd.get("Passthru") else None
            if writes is None:
                extra = " without -Passthru" if before.passthru else ""
                raise InvalidInput(f"{before.name} writes no objects to the pipeline{extra} ({cmd.token.where})",
                                   hint=f"add -Passthru to {before.name}" if before.passthru
                                   else "run the commands as separate statements")
            if "*" not in cmdlet.accepts and writes not in cmdlet.accepts:
                raise InvalidInput(f"{cmdlet.name} cannot take the objects of {before.name} from the pipeline "
                                   f"({cmd.token.where})", hint=f"give {cmdlet.name} its parameters instead")
            given = [p.name for p in cmdlet.signature.params if p.pipeline and p.name in cmd.args]
            if given:
                raise InvalidInput(f"{cmdlet.name}: -{given[0]} and the pipeline's objects both say what to act on "
                                   f"({cmd.token.where})", hint=f"drop -{given[0]}, or the pipe")
        planned.append(Planned(statement, cmdlets))
    return planned


def execute(service: Service, script: str, note: Note) -> Iterator[tuple[Statement, list[PSObject]]]:
    """Plan the script, then run it; yields each statement with the objects it wrote."""
    planned = plan(script)
    session = Session(service, note)
    try:
        for item in planned:
            try:
                yield item.statement, _pipeline(session, item)
            except NestorError as exc:
                if len(planned) > 1:
                    exc.context.setdefault("line", str(item.statement.line))
                raise
    finally:
        session.close()


def level_of(cmd: Command, obj: PSObject | None) -> str:
    """The VM path of the host CMD runs on: its -ComputerName, else its pipeline object's, else this host ('')."""
    given = cmd.get("ComputerName")
    carried = obj.props.get("ComputerName") if obj is not None else None
    if given is not None and carried is not None and given != carried:
        raise InvalidInput(f"{cmd.name}: -ComputerName {given or 'localhost'} but the pipeline's object is of "
                           f"'{carried}' ({cmd.token.where})", hint=f"drop -ComputerName from {cmd.name}")
    return str(given if given is not None else carried or "")


_VM_MESSAGE = re.compile(r"^vm '([a-z0-9-]+)'")


def _run(session: Session, cmdlet: Cmdlet, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    """CMDLET on its level; what it writes there carries the level as ComputerName; an error about
    a VM of that level names it by its path (`vm 'l1/l9': no VM 'l9' in l1`)."""
    session.level = level_of(cmd, obj)
    level = session.level
    try:
        objects = cmdlet.run(session, cmd, obj)
    except NestorError as exc:
        named = _VM_MESSAGE.match(exc.message)
        if level and named:
            raise level_error(f"{level}/{named.group(1)}", level, exc) from exc
        raise
    if not level:
        return objects
    return [o if "ComputerName" in o.props else dataclasses.replace(o, props={**o.props, "ComputerName": level})
            for o in objects]


def _pipeline(session: Session, item: Planned) -> list[PSObject]:
    commands = item.statement.commands
    objects = _run(session, item.cmdlets[0], commands[0], None)
    for cmd, cmdlet in zip(commands[1:], item.cmdlets[1:], strict=True):
        if not objects:
            if "*" not in cmdlet.accepts:  # formatting nothing is not worth a note
                session.note(f"note: the pipeline is empty: {cmdlet.name} did not run")
            return []
        out: list[PSObject] = []
        for obj in objects:
            out += _run(session, cmdlet, cmd, obj)
        objects = out
    return objects
