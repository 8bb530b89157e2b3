"""The seed's memory rules with a real L2 running inside a nested L1 (R7, R12-R14)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from nestor import paths
from nestor.images.appliance import BOOT_LINE as L2_BOOT_LINE
from nestor.images.nested_host import BOOT_LINE as L1_BOOT_LINE
from nestor.service import daemon
from tests.helpers import in_l1, nestor, show, vm_dir, wait_for_text

pytestmark = [pytest.mark.vm, pytest.mark.nested]

R7 = ("a hypervisor is running inside vm 'l1' (nested virtualization); "
      "memory can only change while the VM is off")




def wait_detected(home: Path, running: bool, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while show(home, "l1")["hypervisor_running"] is not running:
        assert time.monotonic() < deadline, f"hypervisor_running never became {running}"
        time.sleep(1)


def balancer_status(directory: Path) -> dict[str, object]:
    try:
        data: dict[str, object] = json.loads((directory / paths.BALANCER_STATUS).read_text())
        return data
    except (OSError, ValueError):
        return {}


def test_l2_freezes_memory_and_save_of_l1(l1_home: Path) -> None:
    home = l1_home
    directory = vm_dir(home, "l1")
    # Dynamic memory is set while l1 is off (that always works), then l1 boots again.
    nestor(home, "vm", "stop", "l1", "--turn-off")
    nestor(home, "vm", "set-memory", "l1", "--dynamic", "on", "--minimum", "512M", "--maximum", "1536M")
    nestor(home, "vm", "start", "l1")
    wait_for_text(directory / paths.SERIAL_LOG, L1_BOOT_LINE, timeout=180)
    assert daemon.running_pid(paths.Home(home)) is not None
    deadline = time.monotonic() + 90
    while nestor(home, "vm", "exec", "--timeout", "20", "l1", "--", "true", check=False, timeout=60).returncode != 0:
        assert time.monotonic() < deadline, "l1's guest agent never answered after the restart"
        time.sleep(2)

    in_l1(home, "nestor", "vm", "new", "l2", "--memory", "192M")
    in_l1(home, "nestor", "vm", "start", "l2")
    in_l1(home, "nestor", "vm", "log", "l2", "--until", L2_BOOT_LINE, "--timeout", "150")
    wait_detected(home, True)

    result = nestor(home, "vm", "set-memory", "l1", "--buffer", "30", check=False)
    assert result.returncode == 5 and R7 in result.stderr, result.stderr
    result = nestor(home, "vm", "save", "l1", check=False)
    assert result.returncode == 5 and "R12-R14" in result.stderr, result.stderr
    deadline = time.monotonic() + 20
    while balancer_status(directory).get("state") != "holding":
        assert time.monotonic() < deadline, balancer_status(directory)
        time.sleep(0.5)
    assert "a hypervisor is running inside vm 'l1'" in paths.Home(home).daemon_log.read_text()
    assert show(home, "l1")["memory_buffer"] == 20

    in_l1(home, "nestor", "vm", "stop", "l2", "--turn-off")
    wait_detected(home, False)
    nestor(home, "vm", "set-memory", "l1", "--buffer", "30")
    assert show(home, "l1")["memory_buffer"] == 30
    deadline = time.monotonic() + 20
    while balancer_status(directory).get("state") != "balancing":
        assert time.monotonic() < deadline, balancer_status(directory)
        time.sleep(0.5)
    nestor(home, "vm", "save", "l1", timeout=300)
    assert show(home, "l1")["state"] == "saved"
    nestor(home, "vm", "start", "l1", timeout=300)
    assert "l2" in in_l1(home, "nestor", "vm", "list")  # l1 resumed where it was
