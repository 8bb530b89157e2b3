"""The REST API for libvirt hosts and VMs on them (in-process, libvirt's test driver)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nestor.api.app import Settings, create_app
from nestor.remote import libvirt_engine, testnode
from nestor.service.types import HostInfo, MoveResult, NewVM, VMInfo, from_json

G = 1 << 30


class Api:
    """A synchronous face on httpx's ASGI transport (the app runs in this process)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __getattr__(self, method: str) -> Any:
        async def call(url: str, **kw: Any) -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://nestor") as client:
                return await client.request(method.upper(), url, **kw)

        return lambda url, **kw: asyncio.run(call(url, **kw))


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    for name, kind, memory in (("a", "amd", 16 * G), ("b", "intel", 32 * G)):
        (tmp_path / f"{name}.xml").write_text(testnode.node_xml(kind, memory))
    yield Api(create_app(Settings(tmp_path / "home")))
    libvirt_engine.disconnect_all()


def test_hosts_and_a_move_through_the_api(api: Api, tmp_path: Path) -> None:
    for name in "ab":
        reply = api.post("/v1/hosts", json={"name": name, "uri": f"test://{tmp_path}/{name}.xml"})
        assert reply.status_code == 201, reply.text
    hosts = [from_json(HostInfo, h) for h in api.get("/v1/hosts").json()]
    assert [(h.name, h.vendor, h.nesting_flag) for h in hosts] == [("a", "AMD", "svm"), ("b", "Intel", "vmx")]
    assert "host-model" in hosts[0].cpu_modes

    reply = api.post("/v1/vms", json={"name": "l1", "host": "auto", "nested": True, "memory": G})
    assert reply.status_code == 201, reply.text
    new = from_json(NewVM, reply.json())
    assert new.vm.host == "b" and new.placement is not None and "placed on host 'b'" in new.placement
    shown = from_json(VMInfo, api.get("/v1/vms/l1").json())
    assert shown.host == "b" and shown.nested

    op = api.post("/v1/vms/l1/move", json={"host": "a"})
    assert op.status_code == 202
    done = api.get(f"/v1/operations/{op.json()['id']}", params={"wait": 30}).json()
    assert done["status"] == "success", done
    moved = from_json(MoveResult, done["result"])
    assert (moved.source, moved.dest, moved.live) == ("b", "a", False)
    assert api.get("/v1/hosts/a").json()["vm_names"] == ["l1"]

    refused = api.delete("/v1/hosts/a")
    assert refused.status_code == 409 and refused.json()["error"]["kind"] == "wrong_state"
    bad = api.post("/v1/hosts", json={"name": "x", "uri": "http://nope/system"})
    assert bad.status_code == 400 and bad.json()["error"]["kind"] == "invalid_input"
    assert api.delete("/v1/vms/l1").status_code == 204
    assert api.delete("/v1/hosts/a").status_code == 204
    assert [h["name"] for h in api.get("/v1/hosts").json()] == ["b"]


def test_nat_on_a_libvirt_host_through_the_api(api: Api, tmp_path: Path) -> None:
    assert api.post("/v1/hosts", json={"name": "a", "uri": f"test://{tmp_path}/a.xml"}).status_code == 201
    reply = api.post("/v1/nats", json={"name": "vmnat", "host": "a", "prefix": "192.168.100.0/24", "dhcp": True})
    assert reply.status_code == 201, reply.text
    assert (reply.json()["host"], reply.json()["state"], reply.json()["gateway"]) == ("a", "active", "192.168.100.1")
    assert [(n["name"], n["host"]) for n in api.get("/v1/nats").json()] == [("vmnat", "a")]
    both = api.post("/v1/nats", json={"name": "x", "host": "a", "switch": "sw", "prefix": "10.1.0.0/24"})
    assert both.status_code == 400 and "either --switch" in both.json()["error"]["message"]
    assert api.post("/v1/vms", json={"name": "web", "host": "a", "network": "vmnat"}).status_code == 201
    assert api.delete("/v1/nats/vmnat").status_code == 409
    assert api.delete("/v1/vms/web").status_code == 204
    assert api.delete("/v1/nats/vmnat").status_code == 204
    assert api.get("/v1/nats").json() == []


def test_a_uri_query_that_runs_a_program_is_refused_through_the_api(api: Api, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    program = tmp_path / "program"
    program.write_text(f"#!/bin/sh\necho \"$@\" > {ran}\nexit 1\n")
    program.chmod(0o755)
    for query in (f"command={program}", f"netcat={program}", "keyfile=/etc/shadow", "socket=/run/x.sock"):
        reply = api.post("/v1/hosts", json={"name": "x", "uri": f"qemu+ssh://127.0.0.1/system?{query}"})
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert error["kind"] == "invalid_input" and "is not allowed" in error["message"] and error["hint"], reply.text
    assert not ran.exists()
    assert api.get("/v1/hosts").json() == []
