"""Any hypervisor inside (issue 10 item 7) and one remote libvirtd in one L1 (issue 12's CI test),
with one L1 booted once for the module.

The L1 is `vm new hv --image debian-libvirt --nested` (q35, SeaBIOS) from an image built with
`--packages qemu-system-x86,libvirt-daemon-system,libvirt-clients`. Inside it:
- `virt-host-validate qemu` passes its KVM checks;
- `virsh` defines and starts an L2 with `<domain type='kvm'>`; the L2 reports CPUID's hypervisor
  leaf on its serial console (KVMKVMKVM: the L1's KVM runs it) and counts;
- from L0, nestor sees "a hypervisor is running" in hv and refuses `vm save` naming R12-R14.
Then L0's nestor registers the L1's libvirtd (qemu+tcp on the test's internal switch), reads its
capabilities (nesting offered), creates a VM there with `vm new --host`, it runs, the tree shows it.

Everything network lives in a namespace the test made; the finalizer ends the L1 and deletes it.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import guest_home, nestor, reap_home, vm_dir, wait_for_text
from tests.integration import libvirt_l1 as lab_mod
from tests.integration.libvirt_l1 import L2_DIR, L2_INITRD, L2_KERNEL, L2_UP, nestor_in, wait_until

# In CI (issue 12's "smaller CI test"): one L1 booted once for the module. Its cost is the L1's
# boot under TCG (SeaBIOS, GRUB, systemd, cloud-init: ~9 min at load ~10 here) plus a few minutes
# of tests; the image is one extra cached build (docs/scale.md has the measured times).
pytestmark = [pytest.mark.vm, pytest.mark.nested, pytest.mark.timeout(3600)]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Lab:
    home: Path
    netns: str
    address: str
    boot_seconds: float

    def cli(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return nestor(self.home, *args, netns=self.netns, **kw)

    def inside(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        """The CLI inside the namespace (libvirt client connections to the L1 start there)."""
        return nestor_in(self.netns, self.home, *args, **kw)

    def l1(self, *argv: str, check: bool = True, timeout: float = 900) -> str:
        """A command in the L1 through its guest agent (`vm exec`), as root."""
        result = self.cli("vm", "exec", "--timeout", str(timeout), "hv", "--", *argv, check=False, timeout=timeout + 60)
        if check:
            assert result.returncode == 0, f"{argv} in hv: {result.returncode}\n{result.stdout}{result.stderr}"
        return result.stdout


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    begun = time.monotonic()
    images = lab_mod.prepared_images()
    work = tmp_path_factory.mktemp("libvirt-l1")
    home = guest_home(work / "home", images)
    netns = f"nt-{secrets.token_hex(4)}"
    subnet = f"10.{80 + secrets.randbelow(40)}.{secrets.randbelow(250)}"
    address = f"{subnet}.10"
    assert lab_mod.sh("ip", "netns", "add", netns).returncode == 0
    lab_mod.sh("ip", "-n", netns, "link", "set", "lo", "up")
    try:
        cli = functools.partial(nestor, home, netns=netns)
        cli("switch", "new", "sw", "--type", "internal")
        cli("switch", "set-ip", "sw", f"{subnet}.1/24")
        seed = work / "user-data"
        seed.write_text(lab_mod.lean_user_data(lab_mod.user_data(address, lab_mod.l2_initramfs(work))))
        lab_mod.new_l1(cli, "hv", address, f"{subnet}.1", seed)
        started = time.monotonic()
        cli("vm", "start", "hv")
        wait_for_text(vm_dir(home, "hv") / "serial.log", lab_mod.READY_LINE, timeout=lab_mod.BOOT_TIMEOUT)
        boot = time.monotonic() - started
        print(f"[measure] L1 hv boot to libvirt ready (cloud-init runcmd done): {boot:.1f} s", file=sys.stderr)
        wait_until("hv's guest agent answers", lambda: cli("vm", "exec", "hv", "true", check=False).returncode == 0, 180)
        yield Lab(home, netns, address, boot)
    finally:
        reap_home(home)
        lab_mod.sh("ip", "netns", "del", netns)
        print(f"[measure] libvirt L1 module, fixture start to teardown: {time.monotonic() - begun:.1f} s", file=sys.stderr)


def test_virt_host_validate_kvm_checks_pass(lab: Lab) -> None:
    out = ANSI.sub("", lab.l1("virt-host-validate", "qemu", check=False))
    for check in ("Checking for hardware virtualization", "Checking if device /dev/kvm exists",
                  "Checking if device /dev/kvm is accessible"):
        lines = [line for line in out.splitlines() if check in line]
        assert lines and lines[0].rstrip().endswith("PASS"), f"{check}:\n{out}"
    flag = vendor_flag()
    assert flag in lab.l1("grep", "-m1", "-o", "-w", flag, "/proc/cpuinfo")


def vendor_flag() -> str:
    """What a nested-enabled L1 sees on this host (svm or vmx), from nestor's own host facts."""
    from nestor.host import facts
    from nestor.policy import accel

    flag = accel.choose(facts.probe()).vendor_flag
    assert flag is not None
    return flag


def _l1_hypervisor(lab: Lab) -> bool | None:
    value = json.loads(lab.cli("vm", "show", "hv", "-o", "json").stdout)["hypervisor_running"]
    assert value is None or isinstance(value, bool)
    return value


def test_virsh_runs_a_kvm_l2_and_l0_sees_a_hypervisor(lab: Lab) -> None:
    assert _l1_hypervisor(lab) is False  # libvirtd alone is no running hypervisor (EFER.SVME clear)
    lab.l1("virsh", "define", f"{L2_DIR}/l2a.xml")
    started = time.monotonic()
    lab.l1("virsh", "start", "l2a")
    serial = "/var/log/libvirt/qemu/l2a-serial.log"
    text = wait_until("the L2 counts on its serial console",
                      lambda: (out := lab.l1("cat", serial, check=False)) and "nestor-l2: count 2" in out and out, 900)
    print(f"[measure] virsh start to the L2's second count: {time.monotonic() - started:.1f} s", file=sys.stderr)
    assert f"{L2_UP} 'KVMKVMKVM'" in text  # CPUID's hypervisor leaf: the L1's KVM runs the L2
    live = lab.l1("virsh", "dumpxml", "l2a")
    assert "<domain type='kvm'" in live and f"<kernel>{L2_KERNEL}</kernel>" in live
    assert lab.l1("virsh", "domstate", "--reason", "l2a").strip() == "running (booted)"
    # libvirt's QEMU really got KVM (and ACPI: without it the kernel hangs silently, see l2_domain_xml).
    argv = lab.l1("cat", "/var/log/libvirt/qemu/l2a.log")
    assert "-accel kvm" in argv and "-no-acpi" not in argv, argv
    # From L0: a hypervisor runs in hv (EFER.SVME while L1's KVM has a live VM), so R12-R14 apply.
    wait_until("nestor sees a hypervisor running in hv", lambda: _l1_hypervisor(lab) is True, 300, 1)
    refused = lab.cli("vm", "save", "hv", check=False)
    assert refused.returncode == 5, refused
    assert refused.stderr.startswith("error: ") and "R12-R14" in refused.stderr and "hint: " in refused.stderr
    assert json.loads(lab.cli("vm", "show", "hv", "-o", "json").stdout)["state"] == "running"
    lab.l1("virsh", "destroy", "l2a")
    lab.l1("virsh", "undefine", "l2a")
    wait_until("nestor sees no hypervisor running in hv", lambda: _l1_hypervisor(lab) is False, 300, 1)


def test_remote_libvirtd_in_the_l1(lab: Lab) -> None:
    """Issue 12's CI test: L0's nestor adds the L1's libvirtd as a host and runs a VM there."""
    uri = f"qemu+tcp://{lab.address}/system"
    assert lab.inside("host", "add", "hv-libvirt", uri).returncode == 0
    shown = json.loads(lab.inside("host", "show", "hv-libvirt", "-o", "json").stdout)
    assert shown["reachable"] is True and shown["uri"] == uri
    assert shown["virt_type"] == "kvm" and shown["nesting"] is True and shown["nesting_flag"] == vendor_flag(), shown
    assert shown["hostname"] == "hv"
    listed = json.loads(lab.inside("host", "list", "-o", "json").stdout)
    assert [h["name"] for h in listed] == ["hv-libvirt"]

    started = time.monotonic()
    lab.inside("vm", "new", "counter", "--host", "hv-libvirt", "--memory", "128M", "--kernel", L2_KERNEL,
               "--initrd", L2_INITRD, "--append", "console=ttyS0 quiet count")
    lab.inside("vm", "start", "counter")
    info = json.loads(lab.inside("vm", "show", "counter", "-o", "json").stdout)
    assert info["state"] == "running" and info["host"] == "hv-libvirt", info
    # The domain in the L1's libvirt is nestor's, KVM, and its console counts.
    assert "<domain type='kvm'" in lab.l1("virsh", "dumpxml", "counter")
    tty = lab.l1("virsh", "ttyconsole", "counter").strip()
    assert tty.startswith("/dev/pts/"), tty
    seen = wait_until("the remote VM counts on its console",
                      lambda: "nestor-l2: count" in (out := lab.l1("timeout", "5", "cat", tty, check=False)) and out, 900, 0)
    print(f"[measure] vm new --host + start to console output: {time.monotonic() - started:.1f} s", file=sys.stderr)
    assert "nestor-l2: count" in seen

    tree = json.loads(lab.inside("tree", "-o", "json").stdout)
    text = json.dumps(tree)
    assert "hv-libvirt" in text and '"counter"' in text and '"hv"' in text, tree

    lab.inside("vm", "stop", "counter", "--turn-off")
    lab.inside("vm", "remove", "counter")
    assert "counter" not in lab.l1("virsh", "list", "--all", "--name")
    lab.inside("host", "remove", "hv-libvirt")
