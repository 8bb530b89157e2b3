"""Hyper-V enlightenments for real: an L2 under L1's KVM with `--enlightenments hyperv` sees
Microsoft Hyper-V (L0 → L1 → L2; the L1 is the module's one booted nested host). Branches on
the L1 nestor's own host facts: where its accelerator cannot give the flags, the refusal is checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import in_l1

pytestmark = [pytest.mark.vm, pytest.mark.nested]

HYPERV_LINE = "Hypervisor detected: Microsoft Hyper-V"


def test_l2_with_enlightenments_sees_hyperv(l1_home: Path) -> None:
    check = json.loads(in_l1(l1_home, "nestor", "host", "check", "-o", "json"))
    accel = next(c["detail"] for c in check["checks"] if c["name"] == "accelerator").split(":")[0]
    # loglevel=7: the appliance boots `quiet`, which keeps the pr_info "Hypervisor detected" line off the console
    in_l1(l1_home, "nestor", "vm", "new", "l2", "--memory", "192M", "--append", "loglevel=7")
    if accel != "kvm":
        result = in_l1(l1_home, "sh", "-c", "nestor vm set-processor l2 --enlightenments hyperv 2>&1; echo rc=$?")
        assert "hv-vpindex" in result and "rc=0" not in result
        return
    in_l1(l1_home, "nestor", "vm", "set-processor", "l2", "--enlightenments", "hyperv")
    l2 = json.loads(in_l1(l1_home, "nestor", "vm", "show", "l2", "-o", "json"))
    assert l2["enlightenments"] == "hyperv"
    in_l1(l1_home, "nestor", "vm", "start", "l2")
    try:
        in_l1(l1_home, "nestor", "vm", "log", "l2", "--until", HYPERV_LINE, "--timeout", "150")
        cpu = json.loads(in_l1(l1_home, "nestor", "vm", "show", "l2", "-o", "json"))["cpu_model"]
        assert cpu.startswith("host")
        facts = check["facts"]
        launch = in_l1(l1_home, "sh", "-c", "cat /var/lib/nestor/vms/*/launch.json")
        assert "hv-relaxed" in launch and "hv-stimer" in launch and "kvm=off" in launch
        assert ("hv-evmcs" in launch) == (facts["kvm_module"] == "kvm_intel")
    finally:
        in_l1(l1_home, "nestor", "vm", "stop", "l2", "--turn-off")
