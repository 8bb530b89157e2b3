"""A saved VM is frozen: a restore must find the same machine, adapters included."""

from __future__ import annotations

from pathlib import Path

import pytest

from nestor import paths
from nestor.errors import StateError
from nestor.model import VMConfig, VMState
from nestor.service.network import Network
from nestor.state import db


def test_adapters_of_a_saved_vm_cannot_change(tmp_path: Path) -> None:
    home = paths.Home(tmp_path)
    conn = db.connect(home.db)
    config = db.VMRepo(conn).add(VMConfig(name="web"))
    net = Network(home, "nt-unit", conn, lambda c: VMState.OFF)  # no QEMU: Off, or saved
    net.store.add_switch("sw", "internal", "nt-unit", None)
    net.adapter_add("web", "sw")
    files = paths.VMFiles(home.vm_dir(config.id))
    files.dir.mkdir(parents=True)
    files.saved_state.write_bytes(b"state")
    files.saved_meta.write_text('{"room": 536870912}')
    with pytest.raises(StateError, match="is saved") as err:
        net.adapter_add("web", "sw")
    assert "nestor vm start web" in (err.value.hint or "")
    with pytest.raises(StateError, match="is saved"):
        net.adapter_remove("web", "net0")
    assert [a.name for a in net.store.adapters_of_vm(config.id)] == ["net0"]
