import threading
import time
from pathlib import Path

import pytest

from nestor.errors import Conflict, NotFound
from nestor.model import VMConfig
from nestor.state import db
from nestor.state.lock import vm_lock


def test_migrations_are_idempotent(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "n.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(db.MIGRATIONS)
    db.migrate(conn)
    conn2 = db.connect(tmp_path / "n.db")
    assert conn2.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_repo_roundtrip(tmp_path: Path) -> None:
    repo = db.VMRepo(db.connect(tmp_path / "n.db"))
    added = repo.add(VMConfig(name="a", vcpus=2, nested=True))
    assert added.id > 0 and repo.get("a").nested and repo.get("a").vcpus == 2
    with pytest.raises(Conflict):
        repo.add(VMConfig(name="a"))
    repo.remove(added.id)
    with pytest.raises(NotFound):
        repo.get("a")


def test_lock_excludes_and_times_out(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with vm_lock(path, "a"):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    with pytest.raises(Conflict, match="busy"), vm_lock(path, "a", timeout=0.2):
        pass
    release.set()
    thread.join()
    start = time.monotonic()
    with vm_lock(path, "a", timeout=1):
        assert time.monotonic() - start < 1
