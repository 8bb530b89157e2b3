"""The host end of the API channel against a hostile guest end (an L1 runs whatever its owner installs).

The guest end here is a fake: a unix socket that answers the sync and then whatever a test
scripts, byte for byte. What is under test is nestor's host side (service/channel.py, client.py,
service/guests.py), which is real: the transport, the typed client, `descend` and `vm_exec`.
"""

from __future__ import annotations

import base64
import gzip
import json
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nestor import paths
from nestor.errors import GuestError, NestorError
from nestor.service import channel, guests
from nestor.service.types import TreeNode, to_json

Answer = Callable[[dict[str, Any], socket.socket], None]


def line(**message: Any) -> bytes:
    return json.dumps(message).encode() + b"\n"


def reply(status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None) -> Answer:
    """An answer to the request as the honest guest end frames it (status, headers, base64 body)."""
    def send(request: dict[str, Any], conn: socket.socket) -> None:
        conn.sendall(line(id=request["id"], status=status, headers=headers or {"content-type": "application/json"},
                          body=base64.b64encode(body).decode()))
    return send


def raw(make: Callable[[int], bytes]) -> Answer:
    """Whatever bytes the test makes of the request's id."""
    def send(request: dict[str, Any], conn: socket.socket) -> None:
        conn.sendall(make(request["id"]))
    return send


class FakeGuest:
    """The guest end of one VM's channel socket: answers syncs as the real guest does, and each
    request with the next scripted answer."""

    def __init__(self, sock: Path, answers: list[Answer]) -> None:
        self.answers = list(answers)
        self.requests: list[dict[str, Any]] = []
        self.closed_by_host = threading.Event()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(sock))
        self.server.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                buf = b""
                while True:
                    try:
                        chunk = conn.recv(1 << 16)
                    except OSError:
                        break
                    if not chunk:
                        self.closed_by_host.set()
                        break
                    buf += chunk
                    while b"\n" in buf:
                        text, buf = buf.split(b"\n", 1)
                        message = json.loads(text)
                        if message.get("sync"):
                            conn.sendall(line(id=message["id"], sync=True))
                            continue
                        self.requests.append(message)
                        try:
                            self.answers.pop(0)(message, conn)
                        except OSError:
                            self.closed_by_host.set()
                            break

    def close(self) -> None:
        self.server.close()


class StubCore:
    """What channel.client needs of a Core: the files of a running VM."""

    def __init__(self, vm_dir: Path) -> None:
        self.vm_dir = vm_dir

    def running_files(self, name: str) -> paths.VMFiles:
        return paths.VMFiles(self.vm_dir)


@pytest.fixture
def vm_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ch", dir="/tmp"))  # a unix socket path has 108 bytes
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def guest(vm_dir: Path, *answers: Answer) -> FakeGuest:
    return FakeGuest(paths.VMFiles(vm_dir).api_sock, list(answers))


def descend(vm_dir: Path, timeout: float = 10.0) -> TreeNode:
    """guests.descend on node l1 through the real channel client, as guests.tree calls it."""
    node = TreeNode("l1", 1, "running", 2, "1.0 GiB", True)
    core: Any = StubCore(vm_dir)
    guests.descend(node, lambda: channel.client(core, "l1", timeout, deadline=time.monotonic() + timeout), timeout)
    return node


def tree_json(*names: str) -> bytes:
    return json.dumps({"host": "l1", "level": 1, "vms": [
        {"name": n, "level": 1, "state": "running", "vcpus": 1, "memory": "256 MiB", "nested": False} for n in names]}).encode()


def test_an_honest_tree_is_shown(vm_dir: Path) -> None:
    fake = guest(vm_dir, reply(body=tree_json("l2", "l2b")))
    node = descend(vm_dir)
    assert node.reachable is True and [(c.name, c.level) for c in node.children] == [("l2", 2), ("l2b", 2)]
    fake.close()


def test_a_stacked_gzip_answer_is_not_inflated(vm_dir: Path) -> None:
    """httpx honours content-encoding: a guest could send 1 KiB that becomes 512 MiB in L0."""
    bomb = gzip.compress(gzip.compress(b"\0" * (8 << 20)))
    fake = guest(vm_dir, reply(body=bomb, headers={"content-type": "application/octet-stream",
                                                   "content-encoding": "gzip, gzip", "transfer-encoding": "chunked"}))
    core: Any = StubCore(vm_dir)
    with channel.client(core, "l1", 10.0) as api:
        data = b"".join(api.vm_log("l2"))
    assert data == bomb  # the bytes as sent: no encoding of the guest's reaches httpx
    fake.close()


def test_a_tree_of_too_many_nodes_is_refused_not_built(vm_dir: Path) -> None:
    nodes = json.dumps({"host": "x", "level": 1, "vms": [{}] * (guests.MAX_NODES + 1)}).encode()
    fake = guest(vm_dir, reply(body=nodes))
    node = descend(vm_dir)
    assert node.reachable is False and f"more than {guests.MAX_NODES} VMs" in (node.error or "")
    assert node.children == []
    fake.close()


def test_nodes_are_counted_at_every_level() -> None:
    wide = {"name": "a", "children": [{"name": "b", "children": [{}] * 40}] * 120}  # 4,921 nodes in 3 levels
    with pytest.raises(GuestError, match="more than"):
        guests.tree_from_json({"host": "x", "vms": [wide]})


def test_an_answer_line_longer_than_the_cap_is_refused(vm_dir: Path) -> None:
    body = b"x" * (channel.MAX_LINE - (1 << 20))  # base64 makes it 4/3: past the cap
    fake = guest(vm_dir, reply(body=body, headers={"content-type": "application/octet-stream"}))
    core: Any = StubCore(vm_dir)
    with pytest.raises(GuestError, match=rf"vm 'l1'.* more than {channel.MAX_LINE >> 20} MiB"), \
            channel.client(core, "l1", 10.0) as api:
        b"".join(api.vm_log("l2"))
    fake.close()


def test_an_honest_log_page_fits_the_line() -> None:
    """Both serial log files at their cap, base64 and framed, fit in one answer line."""
    from nestor.engine import seriallog

    page = base64.b64encode(b"x" * 2 * seriallog.MAX_LOG)
    assert len(line(id=1, status=200, headers={"content-type": "application/octet-stream"}, body=page.decode())) \
        < channel.MAX_LINE


MALFORMED: dict[str, Answer] = {
    "not JSON": reply(body=b"{not json"),
    "a status that is not a number": raw(lambda i: line(id=i, status="ok", headers={}, body="")),
    "a status that is a float": raw(lambda i: line(id=i, status=200.5, headers={}, body="")),
    "a body that is not base64": raw(lambda i: line(id=i, status=200, headers={}, body="!!!!")),
    "a body that is not a string": raw(lambda i: line(id=i, status=200, headers={}, body=[1])),
    "headers that are a list": raw(lambda i: line(id=i, status=200, headers=[1], body="")),
    "an error string as the error body": reply(status=500, body=b'{"error": "str"}'),
    "an error envelope that is not a string": raw(lambda i: line(id=i, error={"a": 1})),
    "a tree that is a list": reply(body=b"[1, 2]"),
    "a tree nested too deeply for the parser": reply(body=b"[" * 100_000 + b"]" * 100_000),
    "a tree deeper than the cap": reply(body=json.dumps({"host": "x", "vms": [
        {"name": "a", "children": [{"name": "b", "children": [{"name": "c", "children": [
            {"name": "d", "children": [{"name": "e", "children": [{"name": "f", "children": [
                {"name": "g", "children": [{"name": "h", "children": [{"name": "i"}]}]}]}]}]}]}]}]}]}).encode()),
    "a million empty objects": reply(body=b"[" + b"{}," * 1_000_000 + b"{}]"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_answer_marks_that_level_unreachable_with_a_reason(vm_dir: Path, case: str) -> None:
    fake = guest(vm_dir, MALFORMED[case])
    node = descend(vm_dir)  # never raises: the rest of the tree is still shown
    assert node.reachable is False and node.error, case
    assert node.children == []
    fake.close()


EXEC_MALFORMED: dict[str, Answer] = {
    "not JSON": reply(body=b"\xff\xfe"),
    "a list": reply(body=b"[]"),
    "a code that is a string": reply(body=b'{"code": "x", "stdout": "", "stderr": ""}'),
    "a code that is a bool": reply(body=b'{"code": true, "stdout": "", "stderr": ""}'),
    "stdout that is not base64": reply(body=b'{"code": 0, "stdout": "a", "stderr": ""}'),
    "stdout that is a number": reply(body=b'{"code": 0, "stdout": 5, "stderr": ""}'),
    "an error that is a string": reply(status=502, body=b'{"error": "boom"}'),
    "a status that is not a number": raw(lambda i: line(id=i, status=None, headers={}, body="")),
}


@pytest.mark.parametrize("case", EXEC_MALFORMED)
def test_exec_through_a_level_with_a_malformed_answer_is_a_guest_error_naming_it(vm_dir: Path, case: str) -> None:
    fake = guest(vm_dir, EXEC_MALFORMED[case])
    core: Any = StubCore(vm_dir)
    with pytest.raises(GuestError, match="vm 'l1'"):
        guests.vm_exec(core, "l1/l2", ["true"], timeout=10)
    fake.close()


def test_exec_through_a_level_honest_answer(vm_dir: Path) -> None:
    from nestor.service.types import ExecResult

    fake = guest(vm_dir, reply(body=json.dumps(to_json(ExecResult(3, b"out\x1b[2J", b"err"))).encode()))
    core: Any = StubCore(vm_dir)
    assert guests.vm_exec(core, "l1/l2", ["true"], timeout=10) == ExecResult(3, b"out\x1b[2J", b"err")
    assert fake.requests[0]["path"] == "/v1/vms/l2/exec"
    fake.close()


def test_an_error_of_the_guests_own_nestor_keeps_its_kind_but_is_bounded(vm_dir: Path) -> None:
    error = {"error": {"kind": "not_found", "message": "vm 'l2' not found" + "x" * 5000, "hint": ["h"],
                       "resource": "nope"}}
    fake = guest(vm_dir, reply(status=404, body=json.dumps(error).encode()))
    core: Any = StubCore(vm_dir)
    with pytest.raises(NestorError) as info:
        guests.vm_exec(core, "l1/l2", ["true"], timeout=10)
    assert info.value.kind == "not_found" and len(info.value.message) <= 1000 and info.value.hint == "?"
    fake.close()


def trickle(request: dict[str, Any], conn: socket.socket) -> None:
    """An answer one byte at a time, every 0.1 s, for up to 30 s: a guest that keeps the channel
    busy without ever finishing. Stops when the host end goes away."""
    data = line(id=request["id"], status=200, headers={"content-type": "application/json"},
                body=base64.b64encode(tree_json("l2") * 20).decode())
    for index in range(300):
        conn.sendall(data[index:index + 1])
        time.sleep(0.1)


def test_a_trickling_answer_ends_at_the_levels_deadline(vm_dir: Path) -> None:
    """One deadline per level (connect, sync, request, the whole answer): on main each level got
    its timeout + 10 s, per request, so a guest could hold `tree` well past --timeout."""
    fake = guest(vm_dir, trickle)
    node = descend(vm_dir, timeout=1.0)
    assert node.reachable is False and "within 1.0 s" in (node.error or ""), node.error
    assert fake.closed_by_host.wait(30)  # the host gave up and closed while the guest still trickled
    fake.close()


def test_the_rest_of_the_tree_is_shown_when_one_level_is_hostile(tmp_path: Path, vm_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`nestor tree` (and /v1/tree): a hostile l1 is marked unreachable; l1b's tree is shown."""
    from nestor.service import Service, VMSpec
    from nestor.service.core import Core
    from nestor.service.vms import VMs

    service = Service(tmp_path / "home")
    for name in ("l1", "l1b"):
        service.vm_new(VMSpec(name, kernel="/bin/true", memory=128 << 20, nested=True))
    dirs = {"l1": vm_dir, "l1b": Path(tempfile.mkdtemp(prefix="ch", dir="/tmp"))}
    try:
        hostile = guest(dirs["l1"], reply(status=500, body=b'{"error": "str"}'))
        honest = guest(dirs["l1b"], reply(body=tree_json("l2")))
        real_info = VMs.info

        def info(self: VMs, config: Any, detail: bool = False) -> Any:
            import dataclasses

            from nestor.model import VMState

            return dataclasses.replace(real_info(self, config, detail), state=VMState.RUNNING)

        monkeypatch.setattr(VMs, "info", info)
        monkeypatch.setattr(Core, "hypervisor_running", lambda self, config: (True, "test"))
        monkeypatch.setattr(Core, "running_files", lambda self, name: paths.VMFiles(dirs[name]))
        tree = guests.tree(service.core, timeout=10)
        by_name = {node.name: node for node in tree.vms}
        assert by_name["l1"].reachable is False and "500" in (by_name["l1"].error or "")
        assert by_name["l1b"].reachable is True and [c.name for c in by_name["l1b"].children] == ["l2"]
        hostile.close()
        honest.close()
    finally:
        shutil.rmtree(dirs["l1b"], ignore_errors=True)


def test_untrusted_json_is_bounded_before_it_is_built() -> None:
    from nestor import untrusted

    with pytest.raises(untrusted.TooLarge):
        untrusted.loads(b"[" + b"{}," * 1000 + b"{}]", max_containers=1000)
    with pytest.raises(ValueError, match="deeply"):
        untrusted.loads(b"[" * 100_000 + b"]" * 100_000)
    assert untrusted.loads(b'{"a": [1, {"b": 2}]}', max_containers=3) == {"a": [1, {"b": 2}]}
