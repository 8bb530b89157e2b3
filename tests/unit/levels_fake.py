"""A tree of levels in process for unit tests: three homes, each served by its own app, where
`Service.guest(name)` of one is a Client of the next one's app (in a real tree: the VM's
channel to the nestor inside it). Nothing boots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nestor.api.app import Settings, create_app
from nestor.client import Client
from nestor.errors import GuestError, NotFound
from nestor.service import Service, VMSpec
from tests.helpers import LOCAL


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    """l0 runs VM l1 whose nestor runs VM l2 (each home's VMs defined, nothing boots)."""
    import os
    import secrets
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("the levels' switches need a network namespace (root)")
    # Network safety: a level's switch is a real bridge, so the levels below live in a namespace of the test's.
    netns = f"nt-lv-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    homes = {level: tmp_path / level for level in ("l0", "l1", "l2")}
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"not really a kernel")
    for home, child in ((homes["l0"], "l1"), (homes["l1"], "l2"), (homes["l2"], "web")):
        home.mkdir()
        with Service(home) as service:
            service.vm_new(VMSpec(child, memory=256 << 20, kernel=str(kernel)))
    apps = {homes["l0"]: {"l1": homes["l1"]}, homes["l1"]: {"l2": homes["l2"]}, homes["l2"]: {}}
    clients: list[TestClient] = []

    def guest(self: Service, name: str) -> Client:
        below = apps[self.home].get(name)
        if below is None:
            raise NotFound(f"vm '{name}' not found", hint="nestor vm list shows the VMs")
        if name == "l2" and (tmp_path / "l2-silent").exists():
            raise GuestError(f"vm '{name}': no answer from its nestor API within 5 s")
        app = TestClient(create_app(Settings(below, netns, files=below.parent)), base_url=LOCAL)
        clients.append(app)
        # TestClient's own transport (the app in process) behind a plain httpx client, as a channel is
        return Client(transport=app._transport, where=name)

    monkeypatch.setattr(Service, "guest", guest)
    try:
        yield homes
    finally:
        for http in clients:
            http.close()
        subprocess.run(["ip", "netns", "delete", netns], check=False)


