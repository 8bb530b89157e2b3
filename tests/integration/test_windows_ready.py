"""A Windows-ready VM (issue 19 item 2) with real QEMU: a virtual TPM 2.0 that a Debian guest
sees and reads, swtpm running as the QEMU user and gone with the VM; Hyper-V enlightenments
refused where the accelerator (nestor's own host facts) cannot give them."""

from __future__ import annotations

import json
import os
import pwd
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import guest_home, nestor, reap_home, show, vm_dir

pytestmark = pytest.mark.vm

BOOT_TIMEOUT = 900  # systemd under TCG on a shared host


def swtpms_under(root: Path) -> list[int]:
    """Live swtpm processes working in a directory under `root`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "swtpm":
                continue
            if os.readlink(entry / "cwd").startswith(str(root)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def whome(tmp_path_factory: pytest.TempPathFactory, debian_store: Path) -> Iterator[Path]:
    root = guest_home(tmp_path_factory.mktemp("windows") / "home", debian_store)
    try:
        yield root
    finally:
        reap_home(root)
        for pid in swtpms_under(root):  # a leak: ended, and the test below fails on it
            os.kill(pid, 9)


def host_accel(home: Path) -> str:
    checks = json.loads(nestor(home, "host", "check", "-o", "json", check=False).stdout)["checks"]
    return next(c["detail"] for c in checks if c["name"] == "accelerator").split(":")[0]


def test_tpm_guest_sees_tpm0_and_reads_a_pcr(whome: Path) -> None:
    nestor(whome, "vm", "new", "t1", "--image", "debian-bookworm", "--memory", "1G", "--tpm", "--no-ssh-key")
    assert show(whome, "t1")["tpm"] is True
    nestor(whome, "vm", "start", "t1")
    d = vm_dir(whome, "t1")
    [pid] = swtpms_under(whome)
    if os.geteuid() == 0:
        assert Path(f"/proc/{pid}/status").read_text().count(str(pwd.getpwnam("nestor-qemu").pw_uid)) >= 1
    argv = json.loads((d / "launch.json").read_text())["argv"]
    assert "tpm-crb,tpmdev=tpm0" in argv
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        result = nestor(whome, "vm", "exec", "--timeout", "30", "t1", "--", "cat",
                        "/sys/class/tpm/tpm0/pcr-sha256/0", check=False, timeout=90)
        if result.returncode == 0:
            break
        assert time.monotonic() < deadline, f"no guest agent answer: {result.stderr[-300:]}"
        time.sleep(5)
    pcr = result.stdout.strip()
    assert len(pcr) == 64 and int(pcr, 16) >= 0  # a SHA-256 PCR, read through the guest's TPM driver
    assert nestor(whome, "vm", "exec", "t1", "--", "ls", "/dev/tpm0").returncode == 0
    nestor(whome, "vm", "stop", "t1", "--turn-off")
    assert swtpms_under(whome) == []  # reaped with the VM
    assert (d / "tpm" / "tpm2-00.permall").is_file()  # the TPM's state stays in the VM's directory


def test_enlightenments_follow_the_accelerator(whome: Path) -> None:
    nestor(whome, "vm", "new", "e1", "--image", "debian-bookworm", "--memory", "1G", "--no-ssh-key")
    result = nestor(whome, "vm", "set-processor", "e1", "--enlightenments", "hyperv", check=False)
    if host_accel(whome) == "tcg":
        assert result.returncode != 0
        assert "hv-vpindex" in result.stderr and "hint:" in result.stderr
        assert show(whome, "e1")["enlightenments"] == "off"  # no change
    else:
        assert result.returncode == 0, result.stderr
        assert show(whome, "e1")["enlightenments"] == "hyperv"
    bad = nestor(whome, "vm", "set-processor", "e1", "--enlightenments", "windows", check=False)
    assert bad.returncode != 0
