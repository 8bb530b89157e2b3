"""The API's routes in-process (FastAPI's TestClient) on a temporary home: no QEMU is started.

VMs here are defined with a dummy kernel file (a defined VM needs no image); nothing boots.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from nestor.api import rules, tokens
from nestor.api.app import Settings, create_app
from tests.helpers import LOCAL


@pytest.fixture
def home(tmp_path: Path) -> Path:
    root = tmp_path / "home"
    root.mkdir()
    (tmp_path / "vmlinux").write_bytes(b"not really a kernel")
    return root


@pytest.fixture
def api(home: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(home, files=home.parent)), base_url=LOCAL) as client:  # the kernel file is there
        yield client


def new_vm(api: TestClient, home: Path, name: str, **extra: Any) -> dict[str, Any]:
    response = api.post("/v1/vms", json={"name": name, "memory": 256 << 20, "kernel": str(home.parent / "vmlinux"),
                                         **extra})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def error_of(response: Any, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"kind", "message", "hint", "rule", "resource"}
    assert error["kind"] == kind and error["message"]
    return error


def test_empty_home_lists(api: TestClient) -> None:
    for path in ("/v1/vms", "/v1/switches", "/v1/nats", "/v1/operations"):
        response = api.get(path)
        assert response.status_code == 200 and response.json() == [], (path, response.text)
    images = api.get("/v1/images").json()
    assert {i["name"] for i in images} == {"appliance", "nested-host"} and not any(i["built"] for i in images)
    assert api.get("/").json()["openapi"] == "/v1/openapi.json"
    assert api.get("/v1/openapi.json").json()["info"]["title"] == "nestor"


def test_define_change_remove(api: TestClient, home: Path) -> None:
    created = new_vm(api, home, "a", vcpus=2)
    assert created["vm"]["state"] == "off" and created["vm"]["vcpus"] == 2 and created["vm"]["memory"] == 256 << 20
    assert [v["name"] for v in api.get("/v1/vms").json()] == ["a"]
    shown = api.get("/v1/vms/a").json()
    assert shown["state"] == "off" and shown["pid"] is None and shown["nested"] is False
    # an off VM's processor may change (R2 only refuses while it runs)
    changed = api.patch("/v1/vms/a/processor", json={"nested": True, "count": 1})
    assert changed.status_code == 200, changed.text
    assert changed.json()["vm"]["nested"] is True and changed.json()["vm"]["vcpus"] == 1
    memory = api.patch("/v1/vms/a/memory", json={"startup": 512 << 20})
    assert memory.status_code == 200 and memory.json()["outcome"] == "updated", memory.text
    assert api.get("/v1/vms/a").json()["memory"] == 512 << 20
    error_of(api.post("/v1/vms", json={"name": "a", "memory": 256 << 20, "kernel": str(home.parent / "vmlinux")}),
             409, "conflict")
    assert api.delete("/v1/vms/a").status_code == 204
    error_of(api.get("/v1/vms/a"), 404, "not_found")
    assert api.get("/v1/vms").json() == []


def test_tpm_route_refuses_a_kernel_vm_and_bad_bodies(api: TestClient, home: Path) -> None:
    """PATCH /vms/{name}/tpm (vm set-tpm): a kernel-booted VM has no TPM interface; `on` is required."""
    new_vm(api, home, "k")
    refused = error_of(api.patch("/v1/vms/k/tpm", json={"on": True}), 400, "invalid_input")
    assert "disk-image" in refused["message"]
    error_of(api.patch("/v1/vms/k/tpm", json={}), 400, "invalid_input")
    error_of(api.patch("/v1/vms/k/tpm", json={"on": "yes"}), 400, "invalid_input")
    error_of(api.patch("/v1/vms/k/tpm", json={"on": True, "delete_state": True}), 400, "invalid_input")
    assert api.get("/v1/vms/k").json()["tpm"] is False
    off = api.patch("/v1/vms/k/tpm", json={"on": False})  # nothing to turn off: fine
    assert off.status_code == 200 and off.json()["tpm"] is False, off.text


def test_invalid_input_is_400_and_changes_nothing(api: TestClient, home: Path) -> None:
    kernel = str(home.parent / "vmlinux")
    for body in ({"name": "Bad Name"}, {"name": "x", "vcpus": "many"}, {"name": "x", "colour": "red"}, {},
                 {"name": "x", "memory": 1, "kernel": kernel}, {"name": "x", "memory": -(1 << 30), "kernel": kernel},
                 {"name": "x", "vcpus": 0, "kernel": kernel}, {"name": "x", "config_version": "banana", "kernel": kernel},
                 [1, 2], "name"):
        error_of(api.post("/v1/vms", json=body), 400, "invalid_input")
    error_of(api.post("/v1/vms", content=b"{oops", headers={"content-type": "application/json"}), 400, "invalid_input")
    error_of(api.get("/v1/vms/Bad%20Name"), 400, "invalid_input")
    error_of(api.get("/v1/tree", params={"timeout": -1}), 400, "invalid_input")
    error_of(api.get("/v1/operations/x", params={"wait": "soon"}), 400, "invalid_input")
    assert api.get("/v1/vms").json() == []


def test_not_found_is_404(api: TestClient) -> None:
    for method, path in [("GET", "/v1/vms/ghost"), ("DELETE", "/v1/vms/ghost"), ("POST", "/v1/vms/ghost/start"),
                         ("POST", "/v1/vms/ghost/stop"), ("POST", "/v1/vms/ghost/save"), ("GET", "/v1/vms/ghost/log"),
                         ("GET", "/v1/operations/00000000-0000-4000-8000-000000000000"),
                         ("DELETE", "/v1/operations/00000000-0000-4000-8000-000000000000"),
                         ("DELETE", "/v1/nats/nope"), ("GET", "/v1/switches/nope"), ("GET", "/v1/vms/ghost/adapters")]:
        error_of(api.request(method, path), 404, "not_found")
    error_of(api.get("/v1/no/such/route"), 404, "not_found")
    error_of(api.get("/v1/vms/a%2Fb"), 404, "not_found")
    assert api.put("/v1/vms").status_code == 405 and api.put("/v1/vms").json()["error"]["kind"] == "invalid_input"


def test_failed_operation_keeps_its_error(api: TestClient, home: Path) -> None:
    new_vm(api, home, "off")
    response = api.post("/v1/vms/off/stop")
    assert response.status_code == 202
    op = response.json()
    ended = api.get(op["url"], params={"wait": 30}).json()
    assert ended["status"] == "failure" and ended["error"]["kind"] == "wrong_state" and not ended["may_cancel"]
    assert [o["id"] for o in api.get("/v1/operations").json()] == [op["id"]]


def test_tokens_guard_every_request(home: Path) -> None:
    good = tokens.new(home, "ci")
    with TestClient(create_app(Settings(home, require_token=True)), base_url=LOCAL) as api:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {good}"},
                        {"Authorization": "Bearer "}):
            response = api.get("/v1/vms", headers=headers)
            error_of(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
        error_of(api.get("/v1/openapi.json"), 401, "unauthorized")
        assert api.get("/v1/vms", headers={"Authorization": f"Bearer {good}"}).json() == []
        tokens.revoke(home, "ci")
        error_of(api.get("/v1/vms", headers={"Authorization": f"Bearer {good}"}), 401, "unauthorized")
    assert good not in (home / tokens.FILE).read_text()  # only its hash is stored
    assert (home / tokens.FILE).stat().st_mode & 0o777 == 0o600


def test_console_websocket(home: Path) -> None:
    good = tokens.new(home, "ci")
    with TestClient(create_app(Settings(home, require_token=True)), base_url=LOCAL) as api:
        with pytest.raises(WebSocketDisconnect) as refused, api.websocket_connect("ws://localhost/v1/vms/a/console") as ws:
            ws.receive_bytes()
        assert refused.value.code == 4401
        with pytest.raises(WebSocketDisconnect) as refused, \
                api.websocket_connect("ws://localhost/v1/vms/a/console?token=wrong") as ws:
            ws.receive_bytes()
        assert refused.value.code == 4401
        # with the token: an unknown VM is answered with the error, then closed
        with api.websocket_connect(f"ws://localhost/v1/vms/a/console?token={good}") as ws:
            assert ws.receive_json()["error"]["kind"] == "not_found"
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_bytes()
            assert closed.value.code == 4404


def test_disk_image_resources_refuse_bad_input_with_the_envelope(api: TestClient, home: Path) -> None:
    """Disks, checkpoints, address, import and the Debian build: refused before any work, nothing made."""
    new_vm(api, home, "plain")  # a kernel VM: no qcow2 disks
    for response in (api.get("/v1/vms/plain/disks"), api.get("/v1/vms/plain/checkpoints"),
                     api.post("/v1/vms/plain/disks", json={"name": "data", "size": 1 << 30}),
                     api.post("/v1/vms/plain/checkpoints", json={"name": "c1"})):
        assert "no qcow2 disks" in error_of(response, 400, "invalid_input")["message"]
    error_of(api.post("/v1/vms/plain/checkpoints", json={"name": "Bad Name"}), 400, "invalid_input")
    error_of(api.post("/v1/vms/plain/checkpoints", json={}), 400, "invalid_input")
    error_of(api.post("/v1/vms/nope/checkpoints/c1/apply"), 404, "not_found")
    error_of(api.delete("/v1/vms/nope/disks/data"), 404, "not_found")
    error_of(api.get("/v1/vms/plain/address"), 409, "wrong_state")  # off
    error_of(api.post("/v1/images/store", json={"path": "/a\x00b"}), 400, "invalid_input")
    error_of(api.post("/v1/images/store", json={"path": "rel.qcow2"}), 400, "invalid_input")
    error_of(api.post("/v1/vms", json={"name": "g", "iso": str(home.parent / "none.iso"), "no_ssh_key": True}), 404,
             "not_found")
    error_of(api.post("/v1/vms", json={"name": "g", "image": "nope", "user": "alice"}), 404, "not_found")
    error_of(api.post("/v1/images/debian/build", json={"release": "hamm"}), 400, "invalid_input")
    error_of(api.post("/v1/images/debian/build", json={"size": 1}), 400, "invalid_input")
    error_of(api.post("/v1/images/nested-host/build", json={"packages": ["vim"]}), 400, "invalid_input")
    assert [vm["name"] for vm in api.get("/v1/vms").json()] == ["plain"]
    assert api.get("/v1/images/store").json() == [] and api.get("/v1/operations").json() == []


def test_an_api_caller_names_only_files_in_the_files_directory(tmp_path: Path) -> None:
    """Issue 18: `{"run_script": "/etc/shadow"}` put root's file into the guest; every path field of the
    API is refused outside the files directory (HOME/uploads by default), and nestor's own files and
    symbolic links are refused inside it too."""
    from nestor.service import Service

    home = tmp_path / "home"
    Service(home).close()  # a nestor home first: nestor takes over no directory that holds files already
    uploads = home / "uploads"
    uploads.mkdir()
    (uploads / "vmlinux").write_bytes(b"not really a kernel")
    (uploads / "shadow").symlink_to("/etc/shadow")
    (uploads / "up").symlink_to(home)
    (uploads / "link").symlink_to(uploads / "vmlinux")
    with TestClient(create_app(Settings(home)), base_url=LOCAL) as api:
        kernel = str(uploads / "vmlinux")
        for body in ({"run_script": "/etc/shadow"}, {"kernel": "/etc/shadow"}, {"kernel": kernel, "initrd": "/etc/shadow"},
                     {"iso": "/etc/shadow"}, {"image": "x", "ssh_key": "/etc/shadow"},
                     {"image": "x", "cloud_init": "/etc/shadow"}, {"kernel": str(uploads / ".." / "nestor.db")},
                     {"kernel": str(uploads / "up" / "nestor.db")}):
            error = error_of(api.post("/v1/vms", json={"name": "x", **body}), 403, "forbidden")  # not this caller's
            assert "files directory" in error["message"], (body, error)
            assert str(uploads) in error["hint"]
        error = error_of(api.post("/v1/vms", json={"name": "x", "kernel": "vmlinux"}), 400, "invalid_input")
        assert "should match pattern" in error["message"] and str(uploads) in error["hint"]  # the document's FILE rule
        error = error_of(api.post("/v1/vms", json={"name": "x", "kernel": str(uploads / "link")}), 400, "invalid_input")
        assert "symbolic link" in error["message"], error
        error = error_of(api.post("/v1/images/store", json={"path": "/etc/shadow"}), 403, "forbidden")
        assert "files directory" in error["message"]
        assert api.get("/v1/vms").json() == [] and api.get("/v1/operations").json() == []
        assert api.post("/v1/vms", json={"name": "ok", "memory": 256 << 20, "kernel": kernel}).status_code == 201
    other = tmp_path / "files"
    other.mkdir()
    (other / "vmlinux").write_bytes(b"not really a kernel")
    with TestClient(create_app(Settings(home, files=other)), base_url=LOCAL) as api:  # nestor serve --files DIR
        assert api.post("/v1/vms", json={"name": "ok2", "memory": 256 << 20, "kernel": str(other / "vmlinux")}).status_code == 201
        error_of(api.post("/v1/vms", json={"name": "x", "kernel": kernel}), 403, "forbidden")


def test_api_bodies_take_no_coerced_types(api: TestClient, home: Path) -> None:
    """Issue 18: `"vcpus": true` and `"vcpus": "2"` were read as 1 and 2 (pydantic's lax mode)."""
    kernel = str(home.parent / "vmlinux")
    for bad in ({"vcpus": True}, {"vcpus": "2"}, {"vcpus": 2.5}, {"memory": "268435456"}, {"nested": 1}, {"nested": "true"},
                {"name": 5}, {"switches": "sw"}, {"switches": [1]}):
        body = {"name": "x", "memory": 256 << 20, "kernel": kernel, **bad}
        error_of(api.post("/v1/vms", json=body), 400, "invalid_input")
    error_of(api.post("/v1/vms/x/stop", json={"turn_off": "yes"}), 400, "invalid_input")
    assert api.get("/v1/vms").json() == []


def test_vm_new_no_network(api: TestClient, home: Path) -> None:
    """POST /v1/vms takes no_network: a VM without adapters; with switches it is bad input, nothing made."""
    created = new_vm(api, home, "quiet", no_network=True)
    assert created["network"] is None and created["vm"]["name"] == "quiet"
    assert api.get("/v1/vms/quiet/adapters").json() == []
    error = error_of(api.post("/v1/vms", json={"name": "both", "kernel": str(home.parent / "vmlinux"),
                                               "no_network": True, "switches": ["lan"]}), 400, "invalid_input")
    assert "--no-network excludes --switch" in error["message"]
    assert [vm["name"] for vm in api.get("/v1/vms").json()] == ["quiet"]


def test_more_than_the_host_allows_is_a_conflict(api: TestClient, home: Path) -> None:
    """docs/decisions.md: memory above the host's, vCPUs above its accelerator's maximum: 409 (the
    request is well formed; a bigger host takes it), the same for vm new, set-memory and set-processor."""
    from nestor.host.facts import probe
    from nestor.policy import accel

    facts = probe()  # nestor's own host facts, as the service reads them
    too_much = rules.MAX_MEMORY  # the document's bound: more than this machine has
    assert facts.mem_total < too_much
    new_vm(api, home, "c")
    conflict = error_of(api.post("/v1/vms", json={"name": "big", "memory": too_much, "kernel": str(home.parent / "vmlinux")}),
                        409, "conflict")
    assert "more than the host has" in conflict["message"]
    patched = error_of(api.patch("/v1/vms/c/memory", json={"startup": too_much}), 409, "conflict")
    assert "more than the host has" in patched["message"]
    error_of(api.post("/v1/vms", json={"name": "small", "memory": 16 << 20}), 400, "invalid_input")  # the request itself
    limit = accel.choose(facts).max_vcpus
    if limit < rules.MAX_VCPUS:  # this host's accelerator allows fewer than the document's bound
        error_of(api.post("/v1/vms", json={"name": "wide", "vcpus": limit + 1, "memory": 256 << 20}), 409, "conflict")
        error_of(api.patch("/v1/vms/c/processor", json={"count": limit + 1}), 409, "conflict")
    assert [vm["name"] for vm in api.get("/v1/vms").json()] == ["c"]
    assert api.get("/v1/vms/c").json()["memory"] == 256 << 20
