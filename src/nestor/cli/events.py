"""`nestor events`: follow the daemon's event stream, of this level and every level below."""

from __future__ import annotations

import time
from typing import Any

import click

from ..errors import HostError
from .context import Ctx, pass_ctx
from .output import OUTPUT, emit_json, escape_controls


@click.command("events")
@OUTPUT
@click.option("--at", "at", default="", metavar="PATH",
              help="only the events of the level at that VM path and of those below it (e.g. l1)")
@click.option("--count", type=click.IntRange(min=1), default=None, help="stop after this many events")
@pass_ctx
def events(ctx: Ctx, output: str, at: str, count: int | None) -> None:
    """Follow the events of the home's daemon (lifecycle, operations, balancer decisions), of this
    level and of every level below it, each with its VM path (l1/l2). -o json: one object a line."""
    import httpx

    from ..client import Client
    from ..hypervisor import split_levels
    from ..paths import Home

    split_levels(at)  # a bad path: its one-line error before anything is opened
    socket = Home(ctx.home).api_socket
    hint = f"nestor --home {ctx.home} serve (a VM start starts one too)"
    if not socket.is_socket():
        raise HostError(f"no nestor daemon answers on {socket}: it is not there", hint=hint)
    shown = 0
    try:
        with Client(socket=socket, timeout=30, at=at) as api:
            for event in api.events(timeout=None):
                if output == "json":
                    emit_json(event)
                else:
                    click.echo(line(event))
                shown += 1
                if count is not None and shown >= count:
                    return
    except httpx.HTTPError as exc:
        raise HostError(f"no nestor daemon answers on {socket}: {exc}", hint=hint) from exc


def line(event: dict[str, Any]) -> str:
    """One event as a line: time, type, the VM path (or level), what happened. Events may come
    from a level below (an untrusted guest): one line, no terminal escapes."""
    stamp = event.get("time")
    when = time.strftime("%H:%M:%S", time.localtime(stamp)) if isinstance(stamp, (int, float)) else "--:--:--"
    kind = str(event.get("type", "?"))
    where = event.get("path") or event.get("at") or "-"
    if kind == "vm":
        if event.get("action"):
            what = str(event["action"])
        else:
            what = f"{event.get('state')}" + (f" (was {event['was']})" if event.get("was") else "")
    elif kind == "operation":
        what = " ".join(str(event[k]) for k in ("status", "description", "progress") if event.get(k))
        if isinstance(event.get("error"), dict):
            what += f": {event['error'].get('message')}"
    elif kind == "level":
        what = str(event.get("state")) + (f": {event['error']}" if event.get("error") else "") \
            + (f" ({event['lost']} events lost)" if event.get("lost") else "")
    elif kind == "balancer":
        what = f"{'held' if event.get('held') else 'target'} {event.get('target')}: {event.get('reason')}"
    else:
        what = ""
    return escape_controls(f"{when}  {kind:<9}  {where}  {what}".rstrip(), keep="")
