"""The nesting block, the audit log and /metrics end to end: a real `nestor serve` on a unix
socket, the real CLI in subprocesses, a real appliance VM with nesting on (QEMU, TCG or KVM)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nestor.client import Client
from nestor.errors import PolicyError
from nestor.host import facts as host_facts
from nestor.images.appliance import BOOT_LINE
from nestor.policy import accel
from tests.helpers import Daemon, nestor, qemus, reap_home, vm_dir, wait_for_text

pytestmark = pytest.mark.vm


@pytest.fixture
def served(home: Path) -> Iterator[Client]:
    run = Path(tempfile.mkdtemp(prefix="nt-pol-", dir="/tmp"))  # a short socket path (108 bytes)
    daemon = Daemon(home, run / "api.sock")
    try:
        daemon.wait_ready()
        with Client(socket=daemon.socket, timeout=180) as client:
            yield client
    finally:
        daemon.stop()
        reap_home(home)
        shutil.rmtree(run, ignore_errors=True)


def audit(home: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(nestor(home, "audit", "-o", "json").stdout)
    return entries


def metrics(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(client.metrics()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return found


def test_a_blocked_host_refuses_to_start_a_nested_vm(home: Path, served: Client) -> None:
    if not accel.choose(host_facts.probe()).nesting_available:
        pytest.skip("this host cannot offer nesting (nestor host check): a nested VM would not start anyway")
    nestor(home, "vm", "new", "l1", "--nested", "--memory", "256M")
    assert json.loads(nestor(home, "host", "set", "--nesting", "block", "-o", "json").stdout)["nesting"] == "block"
    check = json.loads(nestor(home, "host", "check", "-o", "json", check=False).stdout)
    assert check["policy"]["nesting"] == "block" and check["policy"]["nested_vms"] == ["l1"]

    # The CLI: refused with the policy named, nothing started
    refused = nestor(home, "vm", "start", "l1", check=False)
    assert refused.returncode == 5, refused.stderr
    assert "error: vm 'l1': a VM with nested virtualization on cannot start while this host's policy blocks nesting" \
        in refused.stderr
    assert "hint: nestor host set --nesting allow" in refused.stderr
    assert qemus(home) == [] and not (vm_dir(home, "l1") / "qmp.sock").exists()
    # The API (the daemon's operation): the same refusal, kind policy with the rule id
    with pytest.raises(PolicyError) as api_refused:
        served.vm_start("l1")
    assert api_refused.value.rule == "nesting-block" and api_refused.value.hint is not None
    assert api_refused.value.hint.startswith("nestor host set --nesting allow")
    with pytest.raises(PolicyError):
        served.vm_set_processor("l1", nested=True)
    assert qemus(home) == []
    scraped = metrics(served)
    assert scraped[("nestor_host_nesting_blocked", ())] == 1
    assert scraped[("nestor_vm_state", (("level", "1"), ("state", "off"), ("vm", "l1")))] == 1

    # Allowed again (through the API this time), the same VM starts and boots
    assert served.host_set_policy("allow").nesting == "allow"
    nestor(home, "vm", "start", "l1")
    wait_for_text(vm_dir(home, "l1") / "serial.log", BOOT_LINE, timeout=180)
    info = served.vm_show("l1")
    scraped = metrics(served)
    labels = (("level", "1"), ("vm", "l1"))
    assert scraped[("nestor_vm_state", (("level", "1"), ("state", "running"), ("vm", "l1")))] == 1
    assert scraped[("nestor_vm_nested", labels)] == 1 and scraped[("nestor_vm_vcpus", labels)] == info.vcpus
    assert scraped[("nestor_host_nesting_blocked", ())] == 0
    if info.hypervisor_running is not None:  # what nestor observes (R7 detection), as vm show reports it
        assert scraped[("nestor_vm_hypervisor_running", labels)] == int(info.hypervisor_running)
    if info.memory_assigned is not None:
        assert scraped[("nestor_vm_memory_assigned_bytes", labels)] == info.memory_assigned
    assert scraped[("nestor_operations_total", (("operation", "vm.start"), ("status", "failure")))] == 1
    assert scraped[("nestor_operation_duration_seconds_count", (("operation", "vm.start"),))] == 1

    # The audit log: who (the CLI's uid; the socket's peer by SO_PEERCRED: this test's process), what, result
    entries = [(e["via"], e["uid"], e["operation"], e["target"], e["result"], e["rule"]) for e in audit(home)]
    uid = os.getuid()
    assert entries == [
        ("cli", uid, "vm.new", "l1", "ok", None),
        ("cli", uid, "host.set-policy", "nesting=block", "ok", None),
        ("cli", uid, "vm.start", "l1", "policy", "nesting-block"),
        ("unix", uid, "vm.start", "l1", "policy", "nesting-block"),
        ("unix", uid, "vm.set-processor", "l1", "policy", "nesting-block"),
        ("unix", uid, "host.set-policy", "nesting=allow", "ok", None),
        ("cli", uid, "vm.start", "l1", "ok", None),
    ]
    unix = [e for e in served.audit_list() if e.via == "unix"]
    assert {e.pid for e in unix} == {os.getpid()}  # the kernel's word for who was on the socket
