"""The route table's plain dispatcher (an L1's channel path) against FastAPI, same handlers.

Two temporary homes get the same requests in the same order, one through FastAPI (TestClient),
one through table.dispatch; every answer must be the same: status, content type, headers the
handler set, and the body byte for byte (each home's path replaced by HOME). What the dispatcher
leaves to FastAPI (None) is answered by FastAPI for both, and must be a request it is meant to
leave: invalid input, an unknown route, a stream. No QEMU is started (VMs have a dummy kernel).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nestor.api import handlers
from nestor.api.app import create_app
from nestor.api.runtime import Runtime
from nestor.api.table import Ctx, Settings, dispatch
from tests.helpers import LOCAL


class Side:
    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.home.mkdir(parents=True)
        (root / "vmlinux").write_bytes(b"not really a kernel")
        self.settings = Settings(self.home, files=root)  # the kernel file is in root
        self.runtime = Runtime(self.settings)
        self.ctx = Ctx(self.settings, self.runtime)

    def normal(self, body: bytes, running: bool = False) -> bytes:
        """The body with the home's path as ROOT; of an operation its id and times (and, while
        it may still run, what its worker thread changes) left out."""
        body = body.replace(str(self.home.parent).encode(), b"ROOT")
        if body.startswith(b'{"id":'):
            op = json.loads(body)
            op.update(id="ID", url="URL", created=0, ended=op["ended"] and 1)
            if running:
                for key in ("status", "ended", "progress", "result", "error", "may_cancel"):
                    op.pop(key)
            return json.dumps(op).encode()
        return body


@pytest.fixture
def sides(tmp_path: Path) -> Iterator[tuple[Side, Side, TestClient]]:
    plain, fast = Side(tmp_path / "plain"), Side(tmp_path / "fast")
    with TestClient(create_app(fast.settings, fast.runtime), base_url=LOCAL) as client:
        yield plain, fast, client


def _request(method: str, path: str, body: Any = None, raw: bytes | None = None,
             content_type: str = "application/json") -> tuple[str, str, dict[str, str], bytes]:
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    headers = {"content-type": content_type} if data else {}
    return method, path, headers, data


def both(plain: Side, fast: Side, client: TestClient, method: str, path: str, headers: dict[str, str],
         data: bytes) -> tuple[bool, int, bytes]:
    """Send to both sides; assert the same answer; (answered by the plain path, status, body)."""
    expected = client.request(method, path, headers=headers, content=data)
    answer = dispatch(handlers.table, plain.ctx, method, path, headers, data)
    if answer is None:
        # left to FastAPI: the channel sends it to FastAPI of the same daemon, so compare with the
        # same request on a fresh app of the plain side's home
        with TestClient(create_app(plain.settings, plain.runtime), base_url=LOCAL) as other:
            got = other.request(method, path, headers=headers, content=data)
        status, ctype, body = got.status_code, got.headers.get("content-type"), got.content
        location = got.headers.get("location")
    else:
        status, ctype, body = answer.status, answer.media_type, answer.body
        location = answer.headers.get("Location")
    assert (status, ctype) == (expected.status_code, expected.headers.get("content-type")), (method, path, body)
    running = status == 202  # a new operation: its worker may have ended it already, or not
    assert plain.normal(body, running) == fast.normal(expected.content, running), (method, path)
    assert (location is None) == (expected.headers.get("location") is None)
    if location is not None:
        assert json.loads(body)["url"] == location and expected.json()["url"] == expected.headers["location"]
    return answer is not None, status, body


def test_the_quickstart_and_tree_requests_are_answered_alike_without_fastapi(sides: tuple[Side, Side, TestClient]) -> None:
    plain, fast, client = sides

    def vm(name: str, side: Side) -> dict[str, Any]:
        return {"name": name, "memory": 256 << 20, "kernel": str(side.home.parent / "vmlinux"),
                "switches": [], "append": "nestor.dhcp=1"}

    requests = [
        _request("GET", "/v1/vms"),
        _request("GET", "/v1/switches"),
        _request("GET", "/v1/nats"),
        _request("GET", "/v1/operations"),
        _request("GET", "/v1/images"),
        _request("GET", "/v1/tree?timeout=5"),
        _request("GET", "/v1/tree?timeout=5.0"),
        _request("GET", "/v1/vms/l2"),  # 404 envelope, from the handler
        _request("GET", "/v1/vms/l2/log?until=l2-ping%3A+&timeout=1.0"),  # 404 envelope
        _request("GET", "/v1/operations/00000000-0000-4000-8000-000000000000?wait=0.5"),  # 404 envelope
        _request("DELETE", "/v1/switches/nat0?force=false"),  # 404 envelope
        _request("DELETE", "/v1/nats/nat0"),
        _request("POST", "/v1/vms/l2/start"),  # 404 before any operation
        _request("POST", "/v1/vms/l2/exec", {"argv": ["true"], "timeout": 5}),
        _request("PATCH", "/v1/vms/l2/memory", {"startup": 512 << 20}),
        _request("PUT", "/v1/switches/nat0/address", {"address": "10.0.0.1/24"}),  # 404 (no switch is made here:
        # a bridge would be made in this process's network namespace)
    ]
    for method, path, headers, data in requests:
        plain_answered, _, _ = both(plain, fast, client, method, path, headers, data)
        assert plain_answered, (method, path)
    # state changes: the same on both sides (each its own home)
    for name in ("l2", "l3"):
        method, path, headers, data = _request("POST", "/v1/vms", vm(name, plain))
        expected = client.request("POST", "/v1/vms", json=vm(name, fast))
        answer = dispatch(handlers.table, plain.ctx, method, path, headers, data)
        assert answer is not None and answer.status == expected.status_code == 201, expected.text
        assert plain.normal(answer.body) == fast.normal(expected.content)
    for method, path, headers, data in [
        _request("GET", "/v1/vms"),
        _request("GET", "/v1/vms/l2"),
        _request("GET", "/v1/vms/l2/log?tail=100"),
        _request("PATCH", "/v1/vms/l2/processor", {"count": 2, "nested": None}),
        _request("PATCH", "/v1/vms/l2/memory", {"startup": 512 << 20, "dynamic": False}),
        _request("GET", "/v1/vms/l2/adapters"),
        _request("GET", "/v1/tree?timeout=5"),
        _request("POST", "/v1/vms/l2/stop", {"turn_off": True}),  # an operation (it fails: l2 is off)
        _request("DELETE", "/v1/vms/l3?force=true"),
        _request("GET", "/v1/vms"),
    ]:
        plain_answered, status, body = both(plain, fast, client, method, path, headers, data)
        assert plain_answered, (method, path, status, body)
        if status == 202:  # follow the operation on both sides: its end is the same
            plain_op = dispatch(handlers.table, plain.ctx, "GET", json.loads(body)["url"] + "?wait=10", {}, b"")
            fast_op = client.get(client.get("/v1/operations").json()[-1]["url"], params={"wait": 10})
            assert plain_op is not None and plain_op.status == fast_op.status_code == 200
            assert json.loads(plain_op.body)["status"] == fast_op.json()["status"] == "failure"
            assert plain.normal(plain_op.body) == fast.normal(fast_op.content)
            listed = dispatch(handlers.table, plain.ctx, "GET", "/v1/operations", {}, b"")
            assert listed is not None and [plain.normal(json.dumps(o, separators=(",", ":")).encode())
                                           for o in json.loads(listed.body)] == [
                fast.normal(json.dumps(o, separators=(",", ":")).encode()) for o in client.get("/v1/operations").json()]


def test_invalid_and_unknown_requests_are_left_to_fastapi(sides: tuple[Side, Side, TestClient]) -> None:
    plain, fast, client = sides
    left = [
        _request("POST", "/v1/vms", {"name": 5}),  # a wrong type
        _request("POST", "/v1/vms", {"name": "a", "vcpus": True}),  # a bool for an int
        _request("POST", "/v1/vms", {"name": "a", "colour": "red"}),  # an extra field
        _request("POST", "/v1/vms", {}),  # a missing field
        _request("POST", "/v1/vms"),  # no body
        _request("POST", "/v1/vms", raw=b"{torn"),
        _request("POST", "/v1/vms", raw=b'{"name": "a"}', content_type="text/plain"),
        _request("POST", "/v1/switches", {"name": "s", "type": "bridge"}),  # not a switch type (nothing is made)
        _request("GET", "/v1/tree?timeout=0"),  # out of bounds
        _request("GET", "/v1/tree?timeout=abc"),
        _request("GET", "/v1/tree?timeout=1&timeout=2"),
        _request("GET", "/v1/vms/a/log?tail=-1"),
        _request("DELETE", "/v1/vms/a?force=maybe"),
        _request("GET", "/v1/nothing"),  # no route
        _request("PUT", "/v1/vms"),  # no such method
        _request("GET", "/v1/vms/"),  # Starlette's redirect
        _request("GET", "/"),
    ]
    for method, path, headers, data in left:
        plain_answered, status, _ = both(plain, fast, client, method, path, headers, data)
        assert not plain_answered, (method, path)
        assert status != 500, (method, path)
