"""The host's policy settings (the `host_settings` table): name -> value, with when it changed."""

from __future__ import annotations

import sqlite3
import time

NESTING = "nesting"
DEFAULT_SWITCH = "default_switch"  # the default switch's name (policy/default_switch.py), or none


class PolicyRepo:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get(self, name: str, default: str) -> tuple[str, float | None]:
        """The setting's value and when it was last set (None: never set, the default)."""
        row = self.conn.execute("SELECT value, changed FROM host_settings WHERE name = ?", (name,)).fetchone()
        return (default, None) if row is None else (str(row["value"]), float(row["changed"]))

    def set(self, name: str, value: str) -> float:
        now = time.time()
        self.conn.execute("INSERT INTO host_settings (name, value, changed) VALUES (?, ?, ?)"
                          " ON CONFLICT(name) DO UPDATE SET value = excluded.value, changed = excluded.changed",
                          (name, value, now))
        return now
