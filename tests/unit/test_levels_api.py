"""The API's levels (api/forward.py) in process: three homes, each its own app, where `guest(name)`
of one is a Client of the next one's app (in a real tree: the VM's channel). A request with `at`
reaches the level it names through every level above, by FastAPI and by the plain dispatcher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nestor import hypervisor
from nestor.api import handlers
from nestor.api.app import Settings, create_app
from nestor.api.table import Ctx, dispatch
from nestor.client import Client
from nestor.errors import NotFound
from nestor.service import Service
from tests.helpers import LOCAL
from tests.unit.levels_fake import tree as tree  # the fixture


def names(answer: object) -> list[str]:
    assert isinstance(answer, list)
    return [vm["name"] for vm in answer]


def test_every_route_reaches_the_level_at_names(tree: dict[str, Path]) -> None:
    with TestClient(create_app(Settings(tree["l0"])), base_url=LOCAL) as api:
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
    with TestClient(create_app(Settings(tree["l0"])), base_url=LOCAL) as api:
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
        # the event stream is this level's (with the levels below: `at` filters it), never forwarded
        stream = api.get("/v1/events", params={"at": "l1//l2"})
        assert stream.status_code == 400 and "at" in stream.text


def test_the_plain_dispatcher_forwards_too(tree: dict[str, Path]) -> None:
    from nestor.api.runtime import Runtime

    settings = Settings(tree["l0"])
    ctx = Ctx(settings, Runtime(settings))
    answer = dispatch(handlers.table, ctx, "GET", "/v1/vms?at=l1%2Fl2", {}, b"")
    assert answer is not None and answer.status == 200 and names(json.loads(answer.body)) == ["web"]
    missing = dispatch(handlers.table, ctx, "GET", "/v1/vms/l9?at=l1", {}, b"")
    assert missing is not None and missing.status == 404


def test_the_client_reaches_a_level_by_at(tree: dict[str, Path]) -> None:
    with TestClient(create_app(Settings(tree["l0"])), base_url=LOCAL) as app, Client(transport=app._transport) as root:
        with hypervisor.at(root, "l1/l2") as l2:
            assert [vm.name for vm in l2.vm_list()] == ["web"]
            assert l2.vm_show("web").name == "web"
        with root.guest("l1") as l1:
            assert [vm.name for vm in l1.vm_list()] == ["l2"]
        with pytest.raises(NotFound) as missing, hypervisor.at(root, "l1/l9") as l9:
            l9.vm_list()
        assert missing.value.message == "vm 'l1/l9': no VM 'l9' in l1"
