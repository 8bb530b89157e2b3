"""`nestor audit`: the audit log (service/audit.py), every change of state with who, what, when, result."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from ..service.types import to_json
from .context import Ctx, pass_ctx
from .output import OUTPUT, emit_json, table

COLUMNS = ["time", "who", "via", "operation", "target", "result", "rule"]


@click.command("audit")
@click.option("--since", default=None, metavar="WHEN",
              help="only entries since WHEN: a duration (30m, 2h, 7d), an ISO 8601 time (UTC) or a unix time")
@click.option("--limit", type=int, default=1000, show_default=True, help="at most this many (the newest)")
@OUTPUT
@pass_ctx
def audit(ctx: Ctx, since: str | None, limit: int, output: str) -> None:
    """Every change of state of this home (who, what, when, result), oldest first; reads are not logged."""
    entries = ctx.service.audit_list(since, limit)
    if output == "json":
        emit_json(to_json(entries))
        return
    rows = [{**to_json(e), "time": datetime.fromtimestamp(e.time, UTC).isoformat(timespec="seconds")} for e in entries]
    table(rows, COLUMNS, empty="no changes recorded" + (f" since {since}" if since else ""))
