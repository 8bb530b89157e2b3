"""The audit log's rows (the `audit` table): one per change of state, newest kept (KEEP rows)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

KEEP = 100_000  # rows kept; older ones are deleted as new ones arrive


@dataclass(frozen=True)
class AuditRow:
    time: float
    via: str  # cli | unix | tcp | channel | api
    uid: int | None
    pid: int | None
    token: str | None
    operation: str
    target: str | None
    result: str  # ok, or the error's kind
    rule: str | None = None
    message: str | None = None


class AuditRepo:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(self, row: AuditRow) -> int:
        cur = self.conn.execute(
            "INSERT INTO audit (time, via, uid, pid, token, operation, target, result, rule, message)"
            " VALUES (?,?,?,?,?,?,?,?,?,?)",
            (row.time, row.via, row.uid, row.pid, row.token, row.operation, row.target, row.result, row.rule,
             row.message))
        last = int(cur.lastrowid or 0)
        if last > KEEP and last % 1000 == 0:  # prune now and then, by the primary key (cheap)
            self.conn.execute("DELETE FROM audit WHERE id <= ?", (last - KEEP,))
        return last

    def since(self, since: float | None, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` rows at or after `since` (unix time), oldest first."""
        rows = self.conn.execute(
            "SELECT * FROM (SELECT * FROM audit WHERE time >= ? ORDER BY id DESC LIMIT ?) ORDER BY id",
            (since if since is not None else 0.0, limit)).fetchall()
        return [dict(row) for row in rows]
