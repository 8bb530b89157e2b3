"""Which objects a lab made, at every level, in this home's database (tables labs, lab_objects).

An object is recorded *before* it is created, so a `lab up` killed at any point leaves nothing
that no lab owns: the next `lab up` finds it (or not) and converges, `lab down` removes it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import Conflict, NotFound
from ..state import db


@dataclass(frozen=True)
class LabRecord:
    name: str
    source: str | None
    netns: str | None
    text: str
    objects: int


class Owners:
    def __init__(self, db_path: Path) -> None:
        self.path = db_path

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = db.connect(self.path)  # one per use: `lab up` records from several threads
        try:
            yield conn
        finally:
            conn.close()

    def save(self, name: str, source: str | None, netns: str | None, text: str) -> None:
        with self._conn() as conn:
            conn.execute("INSERT INTO labs (name, source, netns, text) VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                         "source = excluded.source, netns = excluded.netns, text = excluded.text, "
                         "updated = julianday('now')", (name, source, netns, text))

    def get(self, name: str) -> LabRecord:
        for record in self.all():
            if record.name == name:
                return record
        raise NotFound(f"no lab '{name}'", hint="nestor lab list")

    def all(self) -> list[LabRecord]:
        with self._conn() as conn:
            rows = conn.execute("SELECT l.name, l.source, l.netns, l.text, "
                                "(SELECT count(*) FROM lab_objects o WHERE o.lab_id = l.id) "
                                "FROM labs l ORDER BY l.name").fetchall()
        return [LabRecord(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def objects(self, name: str) -> set[tuple[str, str, str]]:
        with self._conn() as conn:
            rows = conn.execute("SELECT o.level, o.kind, o.name FROM lab_objects o JOIN labs l ON l.id = o.lab_id "
                                "WHERE l.name = ?", (name,)).fetchall()
        return {(r[0], r[1], r[2]) for r in rows}

    def owner(self, level: str, kind: str, name: str) -> str | None:
        with self._conn() as conn:
            row = conn.execute("SELECT l.name FROM lab_objects o JOIN labs l ON l.id = o.lab_id "
                               "WHERE o.level = ? AND o.kind = ? AND o.name = ?", (level, kind, name)).fetchone()
        return None if row is None else str(row[0])

    def claim(self, lab: str, level: str, kind: str, name: str) -> None:
        """Record that `lab` makes this object (before making it)."""
        with self._conn() as conn:
            row = conn.execute("SELECT id FROM labs WHERE name = ?", (lab,)).fetchone()
            if row is None:
                raise NotFound(f"no lab '{lab}'", hint="nestor lab up FILE")
            try:
                conn.execute("INSERT INTO lab_objects (lab_id, level, kind, name) VALUES (?, ?, ?, ?) "
                             "ON CONFLICT (level, kind, name) DO NOTHING", (row[0], level, kind, name))
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"{kind} '{name}' cannot be recorded for lab '{lab}': {exc}") from None
        other = self.owner(level, kind, name)
        if other != lab:
            raise Conflict(f"{kind} '{name}' belongs to lab '{other}'", hint=f"nestor lab down {other}")

    def release(self, level: str, kind: str, name: str) -> None:
        with self._conn() as conn:
            conn.execute("DELETE FROM lab_objects WHERE level = ? AND kind = ? AND name = ?", (level, kind, name))

    def release_below(self, path: str) -> None:
        """Forget what was inside VM `path` (it went with the VM)."""
        with self._conn() as conn:
            conn.execute("DELETE FROM lab_objects WHERE level = ? OR level LIKE ? ESCAPE '\\'",
                         (path, path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"))

    def forget(self, name: str) -> None:
        with self._conn() as conn:
            conn.execute("DELETE FROM labs WHERE name = ?", (name,))
