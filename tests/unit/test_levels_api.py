"""The API's levels (api/forward.py) in process: three homes, each its own app, where `guest(name)`
of one is a Client of the next one's app (in a real tree: the VM's channel). A request with `at`
reaches the level it names through every level above, by FastAPI and by the plain dispatcher."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nestor import hypervisor
from nestor.api import handlers
from nestor.api.app import Settings, create_app
from nestor.api.table import Ctx, dispatch
from nestor.client import Client
from nestor.errors import GuestError, NotFound
from nestor.service import Service, VMSpec


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    """l0 runs VM l1 whose nestor runs VM l2 (each home's VMs defined, nothing boots)."""
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
        app = TestClient(create_app(Settings(below)))
        clients.append(app)
        # TestClient's own transport (the app in process) behind a plain httpx client, as a channel is
        return Client(transport=app._transport)

    monkeypatch.setattr(Service, "guest", guest)
    yield homes
    for http in clients:
        http.close()


def names(answer: object) -> list[str]:
    assert isinstance(answer, list)
    return [vm["name"] for vm in answer]


def test_every_route_reaches_the_level_at_names(tree: dict[str, Path]) -> None:
    with TestClient(create_app(Settings(tree["l0"]))) as api:
        assert names(api.get("/v1/vms").json()) == ["l1"]
        assert names(api.get("/v1/vms", params={"at": "l1"}).json()) == ["l2"]
        assert names(api.get("/v1/vms", params={"at": "l1/l2"}).json()) == ["web"]
        assert names(api.get("/v1/vms", params={"at": ""}).json()) == ["l1"]  # empty: this level
        shown = api.get("/v1/vms/web", params={"at": "l1/l2"})
        assert shown.status_code == 200 and shown.json()["name"] == "web"
        changed = api.patch("/v1/vms/l2/processor", params={"at": "l1"}, json={"count": 2})
        assert changed.status_code == 200, changed.text
        made = api.post("/v1/switches", params={"at": "l1/l2"}, json={"name": "lan", "type": "private"})
        assert made.status_code == 201, made.text
        assert api.get("/v1/switches").json() == []  # it is l2's, not l0's
    with Service(tree["l1"]) as l1:
        assert l1.vm_show("l2").vcpus == 2
    with Service(tree["l2"]) as l2:
        assert [s.name for s in l2.switch_list()] == ["lan"]


def test_errors_name_the_level(tree: dict[str, Path]) -> None:
    with TestClient(create_app(Settings(tree["l0"]))) as api:
        missing = api.get("/v1/vms", params={"at": "l1/l9"})
        assert missing.status_code == 404
        assert missing.json()["error"]["message"] == "vm 'l1/l9': no VM 'l9' in l1"
        first = api.get("/v1/vms", params={"at": "l9"})
        assert first.status_code == 404 and first.json()["error"]["message"] == "vm 'l9' not found"
        (tree["l0"].parent / "l2-silent").write_text("")
        silent = api.get("/v1/vms", params={"at": "l1/l2"})
        assert silent.status_code == 502 and silent.json()["error"]["kind"] == "guest"
        assert silent.json()["error"]["message"].startswith("vm 'l1/l2': no answer"), silent.text
        bad = api.get("/v1/vms", params={"at": "l1//l2"})
        assert bad.status_code == 400
        stream = api.get("/v1/events", params={"at": "l1"})
        assert stream.status_code == 400 and "stream" in stream.json()["error"]["message"]


def test_the_plain_dispatcher_forwards_too(tree: dict[str, Path]) -> None:
    from nestor.api.runtime import Runtime

    settings = Settings(tree["l0"])
    ctx = Ctx(settings, Runtime(settings))
    answer = dispatch(handlers.table, ctx, "GET", "/v1/vms?at=l1%2Fl2", {}, b"")
    assert answer is not None and answer.status == 200 and names(json.loads(answer.body)) == ["web"]
    missing = dispatch(handlers.table, ctx, "GET", "/v1/vms/l9?at=l1", {}, b"")
    assert missing is not None and missing.status == 404


def test_the_client_reaches_a_level_by_at(tree: dict[str, Path]) -> None:
    with TestClient(create_app(Settings(tree["l0"]))) as app, Client(transport=app._transport) as root:
        with hypervisor.at(root, "l1/l2") as l2:
            assert [vm.name for vm in l2.vm_list()] == ["web"]
            assert l2.vm_show("web").name == "web"
        with root.guest("l1") as l1:
            assert [vm.name for vm in l1.vm_list()] == ["l2"]
        with pytest.raises(NotFound) as missing, hypervisor.at(root, "l1/l9") as l9:
            l9.vm_list()
        assert missing.value.message == "vm 'l1/l9': no VM 'l9' in l1"
