"""The audit log (service/audit.py): every change of state through the facade, with who, what,
when and result; reads are not recorded. The CLI in-process, the API in-process (TestClient)."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from nestor.api import tokens
from nestor.api.app import Settings, create_app
from nestor.errors import InvalidInput
from nestor.service import Service
from nestor.service.audit import parse_since
from tests.helpers import LOCAL

# The facade's methods that change nothing. Every other public method must be @audited: a new
# use case that forgets to say which it is fails here.
READS = {
    "host_check", "vm_list", "vm_show", "host_list", "host_show", "host_policy", "audit_list", "vm_files",
    "vm_console_socket", "vm_log", "tree", "switch_list", "switch_show", "adapter_list", "nat_list", "nat_show",
    "image_list", "image_check_debian", "image_store_list", "vm_disk_list", "vm_checkpoint_list", "vm_ssh_argv",
    "vm_address", "host_check_tree", "bugreport", "lab_plan", "lab_list", "lab_status", "lab_inventory", "level_report",
    "close", "guest",  # the last two: the handle's own
}


def test_every_use_case_is_a_read_or_audited() -> None:
    public = {name for name, member in inspect.getmembers(Service) if not name.startswith("_") and callable(member)}
    audited = {name for name in public if hasattr(getattr(Service, name), "__audited__")}
    assert public - audited == READS, "classify the new use case: @audited(...) in facade.py, or a read in READS"
    assert not audited & READS


def cli(home: Path, *args: str) -> Any:
    from nestor.cli import main

    runner = CliRunner(env={"COLUMNS": "200"})  # a wide terminal: table cells are not wrapped
    with runner.isolation() as (out, err, _):
        try:
            main(["--home", str(home), *args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        return code, out.getvalue().decode(), err.getvalue().decode()


def audit_of(home: Path, *extra: str) -> list[dict[str, Any]]:
    code, out, err = cli(home, "audit", "-o", "json", *extra)
    assert code == 0, err
    entries: list[dict[str, Any]] = json.loads(out)
    return entries


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "vmlinux").write_bytes(b"not really a kernel")
    return tmp_path / "home"


def test_cli_changes_are_recorded_with_the_uid_and_reads_are_not(home: Path) -> None:
    kernel = str(home.parent / "vmlinux")
    assert cli(home, "vm", "new", "web", "--kernel", kernel, "--memory", "256M")[0] == 0
    assert cli(home, "vm", "new", "l1", "--kernel", kernel, "--memory", "256M", "--nested")[0] == 0
    entries = audit_of(home)
    assert [(e["operation"], e["target"], e["result"]) for e in entries] == [("vm.new", "web", "ok"), ("vm.new", "l1", "ok")]
    first = entries[0]
    assert first["via"] == "cli" and first["uid"] == os.getuid() and first["pid"] is not None and first["token"] is None
    assert first["who"].startswith(f"uid {os.getuid()}")

    for read in (["vm", "list"], ["vm", "show", "web"], ["host", "policy"], ["audit"]):
        assert cli(home, *read)[0] == 0, read
    assert len(audit_of(home)) == 2  # reads are not logged

    # A refused change is recorded with its error kind (and the rule)
    assert cli(home, "host", "set", "--nesting", "block")[0] == 0
    code, _, err = cli(home, "vm", "start", "l1")
    assert code == 5 and "error: vm 'l1'" in err and "hint: nestor host set --nesting allow" in err
    code, _, _ = cli(home, "vm", "set-processor", "web", "--expose-virtualization-extensions", "on")
    assert code == 5
    code, _, _ = cli(home, "vm", "remove", "nosuch")
    assert code == 3
    tail = audit_of(home)[2:]
    assert [(e["operation"], e["target"], e["result"], e["rule"]) for e in tail] == [
        ("host.set-policy", "nesting=block", "ok", None),
        ("vm.start", "l1", "policy", "nesting-block"),
        ("vm.set-processor", "web", "policy", "nesting-block"),
        ("vm.remove", "nosuch", "not_found", None),
    ]
    assert "policy blocks nesting" in tail[1]["message"]

    table = cli(home, "audit")[1]
    assert "vm.start" in table and "policy" in table and "nesting-block" in table


def test_since_and_limit(home: Path) -> None:
    kernel = str(home.parent / "vmlinux")
    for name in ("a", "b", "c"):
        assert cli(home, "vm", "new", name, "--kernel", kernel, "--memory", "256M")[0] == 0
    assert [e["target"] for e in audit_of(home, "--limit", "2")] == ["b", "c"]  # the newest, oldest first
    assert len(audit_of(home, "--since", "1h")) == 3
    assert audit_of(home, "--since", "2999-01-01T00:00:00") == []
    code, _, err = cli(home, "audit", "--since", "yesterday")
    assert code == 2 and "error: invalid --since" in err and "hint:" in err
    assert cli(home, "audit", "--limit", "0")[0] == 2


def test_parse_since() -> None:
    now = 1_800_000_000.0
    assert parse_since("30m", now) == now - 1800
    assert parse_since("2h", now) == now - 7200
    assert parse_since("7d", now) == now - 7 * 86400
    assert parse_since("2027-01-15T08:00:00", now) == 1_800_000_000.0  # UTC
    assert parse_since("2027-01-15T09:00:00+01:00", now) == 1_800_000_000.0
    assert parse_since("1799990000.5", now) == 1799990000.5
    for bad in ("", "1y", "-5m", "soon", "1e9"):
        with pytest.raises(InvalidInput):
            parse_since(bad, now)


def test_api_changes_are_recorded_with_who_and_result(home: Path) -> None:
    kernel = str(home.parent / "vmlinux")
    home.mkdir()
    with TestClient(create_app(Settings(home, files=home.parent)), base_url=LOCAL) as api:
        assert api.post("/v1/vms", json={"name": "web", "memory": 256 << 20, "kernel": kernel}).status_code == 201
        assert api.get("/v1/vms").status_code == 200 and api.get("/v1/audit").status_code == 200  # reads
        assert api.patch("/v1/host/policy", json={"nesting": "block"}).json()["nesting"] == "block"
        refused = api.patch("/v1/vms/web/processor", json={"nested": True})
        assert refused.status_code == 422 and refused.json()["error"]["rule"] == "nesting-block"
        assert api.patch("/v1/host/policy", json={"nesting": "never"}).status_code == 400  # pydantic: no use case ran
        entries = api.get("/v1/audit").json()
    assert [(e["via"], e["operation"], e["target"], e["result"]) for e in entries] == [
        ("api", "vm.new", "web", "ok"), ("api", "host.set-policy", "nesting=block", "ok"),
        ("api", "vm.set-processor", "web", "policy")]
    assert all(e["uid"] is None and e["who"] == "api" for e in entries)  # the TestClient has no unix peer

    token = tokens.new(home, "ci")
    with TestClient(create_app(Settings(home, require_token=True, files=home.parent)), base_url=LOCAL) as tcp:
        auth = {"Authorization": f"Bearer {token}"}
        assert tcp.delete("/v1/vms/web", headers=auth).status_code == 204
        assert tcp.delete("/v1/vms/web", headers=auth).status_code == 404
        assert tcp.delete("/v1/vms/web", headers={"Authorization": "Bearer nope"}).status_code == 401
        last = tcp.get("/v1/audit", params={"limit": 2}, headers=auth).json()
    assert [(e["via"], e["token"], e["who"], e["operation"], e["result"]) for e in last] == [
        ("tcp", "ci", "token ci", "vm.remove", "ok"), ("tcp", "ci", "token ci", "vm.remove", "not_found")]


def fail_appliance_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The build fails inside the operation's thread, as a real one can (no minutes of building)."""
    from nestor.images import initramfs

    def refuse(*_: Any, **__: Any) -> None:
        raise InvalidInput("no packages here", hint="a test")

    monkeypatch.setattr(initramfs, "build_appliance", refuse)


def test_operations_are_recorded_with_the_submitters_identity(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Long work runs in a thread: it carries the request's context (who asked)."""
    fail_appliance_builds(monkeypatch)
    home.mkdir()
    token = tokens.new(home, "ops")
    with TestClient(create_app(Settings(home, require_token=True, files=home.parent)), base_url=LOCAL) as tcp:
        auth = {"Authorization": f"Bearer {token}"}
        op = tcp.post("/v1/images/appliance/build", headers=auth).json()
        done = tcp.get(op["url"].removeprefix("/v1").join(["/v1", ""]), params={"wait": 30}, headers=auth).json()
        assert done["status"] == "failure"
        entries = tcp.get("/v1/audit", headers=auth).json()
    assert [(e["via"], e["token"], e["operation"], e["target"], e["result"]) for e in entries] == [
        ("tcp", "ops", "image.build", "appliance", "invalid_input")]


def test_ps_set_vmprocessor_is_refused_by_the_block_and_recorded(home: Path) -> None:
    kernel = str(home.parent / "vmlinux")
    assert cli(home, "vm", "new", "web", "--kernel", kernel, "--memory", "256M")[0] == 0
    assert cli(home, "host", "set", "--nesting", "block")[0] == 0
    code, _, err = cli(home, "ps", "-c", "Set-VMProcessor -VMName web -ExposeVirtualizationExtensions $true")
    assert code == 5 and "policy blocks nesting" in err and "hint: nestor host set --nesting allow" in err
    last = audit_of(home)[-1]
    assert (last["via"], last["operation"], last["target"], last["result"]) == ("cli", "vm.set-processor", "web", "policy")
