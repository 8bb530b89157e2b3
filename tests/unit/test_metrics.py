"""GET /metrics in-process: Prometheus's text format, parsed with prometheus_client's own parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from nestor.api import tokens
from nestor.api.app import Settings, create_app
from tests.helpers import LOCAL


def samples(text: str) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def value(found: dict[str, list[Any]], name: str, **labels: str) -> float:
    (match,) = [s for s in found[name] if all(s.labels.get(k) == v for k, v in labels.items())]
    return float(match.value)


def test_metrics_of_defined_vms_policy_and_operations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.test_audit import fail_appliance_builds

    fail_appliance_builds(monkeypatch)
    home = tmp_path / "home"
    home.mkdir()
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"not really a kernel")
    with TestClient(create_app(Settings(home, files=tmp_path)), base_url=LOCAL) as api:
        for name, nested in (("web", False), ("l1", True)):
            assert api.post("/v1/vms", json={"name": name, "memory": 256 << 20, "vcpus": 2, "kernel": str(kernel),
                                             "nested": nested}).status_code == 201
        api.patch("/v1/host/policy", json={"nesting": "block"})
        op = api.post("/v1/images/appliance/build").json()  # fails in its thread
        api.get(op["url"], params={"wait": 30})
        response = api.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert value(found, "nestor_vm_state", vm="web", level="1", state="off") == 1
    assert value(found, "nestor_vm_state", vm="web", level="1", state="running") == 0
    assert value(found, "nestor_vm_vcpus", vm="l1") == 2
    assert value(found, "nestor_vm_memory_startup_bytes", vm="l1") == 256 << 20
    assert value(found, "nestor_vm_nested", vm="l1") == 1 and value(found, "nestor_vm_nested", vm="web") == 0
    assert value(found, "nestor_level_vms", host="/", level="0") == 2
    assert value(found, "nestor_host_nesting_blocked") == 1
    assert "nestor_vm_memory_assigned_bytes" not in found  # only running VMs have it
    assert value(found, "nestor_operations_total", operation="image.build", status="failure") == 1
    assert value(found, "nestor_operation_duration_seconds_count", operation="image.build") == 1
    assert value(found, "nestor_operation_duration_seconds_bucket", operation="image.build", le="+Inf") == 1


def test_metrics_need_the_token_over_tcp(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    token = tokens.new(home, "prom")
    with TestClient(create_app(Settings(home, require_token=True)), base_url=LOCAL) as api:
        refused = api.get("/metrics")
        assert refused.status_code == 401 and refused.json()["error"]["kind"] == "unauthorized"
        ok = api.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and "nestor_level_vms" in ok.text


def test_nested_levels_are_labelled_with_their_path() -> None:
    """The tree's levels (what each nested nestor reported) become series labelled l1/l2 and level 2."""
    from contextlib import contextmanager

    from prometheus_client import CollectorRegistry, generate_latest

    from nestor.api.metrics import Collector
    from nestor.api.runtime import Runtime
    from nestor.service.types import HostPolicy, Tree, TreeNode, VMInfo, VMState

    l1 = VMInfo("l1", VMState.RUNNING, 2, 1 << 30, True, "10.0", "nested-host", memory_room=1 << 30,
                memory_assigned=768 << 20, memory_demand=300 << 20, hypervisor_running=True)
    l3 = TreeNode("l3", 3, "running", 1, "128M", False)
    l2 = TreeNode("l2", 2, "running", 1, "256M", True, hypervisor_running=False, reachable=True, children=[l3])
    gone = TreeNode("l2b", 2, "off", 1, "256M", False)
    tree = Tree("l0", 0, [TreeNode("l1", 1, "running", 2, "1G", True, True, reachable=True, children=[l2, gone])])

    class Fake:
        def vm_list(self) -> list[VMInfo]:
            return [l1]

        def vm_show(self, name: str) -> VMInfo:
            return l1

        def host_policy(self) -> HostPolicy:
            return HostPolicy("allow")

        def tree(self, timeout: float) -> Tree:
            return tree

    class Settings:
        @contextmanager
        def service(self) -> Any:
            yield Fake()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(Settings(), Runtime(Settings())))  # type: ignore[arg-type]
    found = samples(generate_latest(registry).decode())
    assert value(found, "nestor_vm_memory_assigned_bytes", vm="l1", level="1") == 768 << 20
    assert value(found, "nestor_vm_memory_demand_bytes", vm="l1") == 300 << 20
    assert value(found, "nestor_vm_balloon_bytes", vm="l1") == 256 << 20
    assert value(found, "nestor_vm_hypervisor_running", vm="l1") == 1
    assert value(found, "nestor_level_reachable", vm="l1", level="1") == 1
    assert value(found, "nestor_level_vms", host="l1", level="1") == 2
    assert value(found, "nestor_vm_state", vm="l1/l2", level="2", state="running") == 1
    assert value(found, "nestor_vm_state", vm="l1/l2b", level="2", state="off") == 1
    assert value(found, "nestor_vm_memory_startup_bytes", vm="l1/l2") == 256 << 20
    assert value(found, "nestor_vm_hypervisor_running", vm="l1/l2") == 0
    assert value(found, "nestor_level_vms", host="l1/l2", level="2") == 1
    assert value(found, "nestor_vm_state", vm="l1/l2/l3", level="3", state="running") == 1
    assert value(found, "nestor_vm_vcpus", vm="l1/l2/l3", level="3") == 1
