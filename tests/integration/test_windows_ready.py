"""A Windows-ready VM (issue 19 item 2) with real QEMU: a virtual TPM 2.0 that a Debian guest
sees and reads, whose state survives save/restore and comes back with a checkpoint, swtpm
running as the QEMU user and gone with the VM (also when QEMU is killed); the TPM turned on
and off on an existing VM, and given back by the checkpoints taken with it (also after the
live state was deleted); Hyper-V enlightenments refused where the accelerator (nestor's own
host facts) cannot give them.

One Debian VM with a TPM ('t1') is booted once and shared by the TPM tests, in file order; the
last of them kills it."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import signal
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import guest_home, nestor, reap_home, show, vm_dir

pytestmark = pytest.mark.vm

BOOT_TIMEOUT = 900  # systemd under TCG on a shared host
PCR = 16  # the debug PCR: resettable, extended by nothing but this test


def swtpms_under(root: Path) -> list[int]:
    """Live swtpm processes working in a directory under `root`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "swtpm":
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
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


def in_guest(home: Path, *argv: str, timeout: float = BOOT_TIMEOUT) -> str:
    """argv in t1 through its guest agent, retried until the agent answers (a boot, a restore)."""
    deadline = time.monotonic() + timeout
    while True:
        result = nestor(home, "vm", "exec", "--timeout", "30", "t1", "--", *argv, check=False, timeout=90)
        if result.returncode == 0:
            return result.stdout
        assert time.monotonic() < deadline, f"no guest agent answer: {result.stderr[-300:]}"
        time.sleep(5)


def read_pcr(home: Path, index: int = PCR) -> str:
    value = in_guest(home, "cat", f"/sys/class/tpm/tpm0/pcr-sha256/{index}").strip()
    assert len(value) == 64, value  # a SHA-256 PCR, read through the guest's TPM driver
    return value.lower()


def extend_pcr(home: Path, data: bytes, index: int = PCR) -> str:
    """TPM2_PCR_Extend(index, sha256(data)) sent raw to /dev/tpm0 in the guest; the PCR's new value,
    checked against the TPM's own rule (new = sha256(old || digest))."""
    old = read_pcr(home, index)
    digest = hashlib.sha256(data).digest()
    password_session = struct.pack(">IHBH", 0x40000009, 0, 0, 0)  # TPM_RS_PW, empty auth
    body = struct.pack(">I", index) + struct.pack(">I", len(password_session)) + password_session \
        + struct.pack(">IH", 1, 0x000B) + digest  # one digest, TPM_ALG_SHA256
    command = struct.pack(">HII", 0x8002, 10 + len(body), 0x00000182) + body  # TPM_ST_SESSIONS, TPM_CC_PCR_Extend
    octal = "".join(f"\\{b:03o}" for b in command)
    script = (f"printf '{octal}' > /tmp/extend && exec 3<>/dev/tpm0 && dd if=/tmp/extend bs=4096 status=none >&3"
              " && dd bs=4096 count=1 status=none <&3 | od -An -tx1")
    response = bytes.fromhex("".join(in_guest(home, "sh", "-c", script).split()))
    assert response[6:10] == b"\0\0\0\0", f"TPM2_PCR_Extend failed: {response.hex()}"  # TPM_RC_SUCCESS
    new = read_pcr(home, index)
    assert new == hashlib.sha256(bytes.fromhex(old) + digest).hexdigest()
    return new


@pytest.fixture(scope="module")
def t1(whome: Path) -> str:
    """The shared TPM VM, booted (its guest agent answers)."""
    nestor(whome, "vm", "new", "t1", "--image", "debian-bookworm", "--memory", "1G", "--tpm", "--no-ssh-key")
    nestor(whome, "vm", "start", "t1")
    in_guest(whome, "true")
    return "t1"


def test_tpm_guest_sees_tpm0_and_reads_a_pcr(whome: Path, t1: str) -> None:
    assert show(whome, t1)["tpm"] is True
    d = vm_dir(whome, t1)
    [pid] = swtpms_under(whome)
    if os.geteuid() == 0:
        assert Path(f"/proc/{pid}/status").read_text().count(str(pwd.getpwnam("nestor-qemu").pw_uid)) >= 1
    argv = json.loads((d / "launch.json").read_text())["argv"]
    assert "tpm-crb,tpmdev=tpm0" in argv
    assert int(read_pcr(whome, 0), 16) >= 0
    assert nestor(whome, "vm", "exec", t1, "--", "ls", "/dev/tpm0").returncode == 0


def test_tpm_state_survives_save_and_restore(whome: Path, t1: str) -> None:
    extended = extend_pcr(whome, b"before save")
    assert extended != "0" * 64
    nestor(whome, "vm", "save", t1, timeout=600)
    assert show(whome, t1)["state"] == "saved"
    assert swtpms_under(whome) == []  # the TPM's state is in the saved state, its swtpm gone
    nestor(whome, "vm", "start", t1, timeout=600)
    assert read_pcr(whome) == extended  # not reset: the guest goes on with the TPM it had


def test_a_checkpoint_brings_the_tpm_back(whome: Path, t1: str) -> None:
    at_checkpoint = read_pcr(whome)
    nestor(whome, "vm", "checkpoint", "new", t1, "c1", timeout=900)
    after = extend_pcr(whome, b"after the checkpoint")
    assert after != at_checkpoint
    nestor(whome, "vm", "checkpoint", "apply", t1, "c1", timeout=900)
    assert read_pcr(whome) == at_checkpoint


def test_the_tpm_can_only_be_switched_while_off(whome: Path, t1: str) -> None:
    refused = nestor(whome, "vm", "set-tpm", t1, "--off", check=False)
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 2 and "running" in lines[0] and lines[1].lstrip().startswith("hint:"), refused.stderr
    assert show(whome, t1)["tpm"] is True  # no change
    ps = nestor(whome, "ps", "-c", f"Disable-VMTPM -VMName {t1}", check=False)
    assert ps.returncode != 0 and "running" in ps.stderr


def checkpoints(home: Path, vm: str) -> dict[str, dict[str, object]]:
    listed = json.loads(nestor(home, "vm", "checkpoint", "list", vm, "-o", "json").stdout)
    return {c["name"]: c for c in listed}


def test_a_running_checkpoint_gives_its_tpm_back(whome: Path, t1: str) -> None:
    """As Hyper-V restores a checkpoint's security settings: a checkpoint of the running VM taken
    with its TPM on, applied after `set-tpm --off` (then after `--off --delete-state`), turns the
    TPM on again and brings back the PCR of the checkpoint's moment, from the checkpoint's own
    TPM state (the live one is gone the second time); one taken without the TPM turns it off."""
    at_checkpoint = extend_pcr(whome, b"at the running checkpoint")
    nestor(whome, "vm", "checkpoint", "new", t1, "live", timeout=900)
    assert extend_pcr(whome, b"after it") != at_checkpoint
    assert checkpoints(whome, t1)["live"]["memory"] is True and checkpoints(whome, t1)["live"]["tpm"] is True
    d = vm_dir(whome, t1)
    for how in (["--off"], ["--off", "--delete-state"]):
        nestor(whome, "vm", "stop", t1, "--turn-off")
        nestor(whome, "vm", "set-tpm", t1, *how)
        assert show(whome, t1)["tpm"] is False
        assert (d / "tpm").is_dir() is (how == ["--off"])
        refused = nestor(whome, "vm", "checkpoint", "apply", t1, "live", check=False)  # its memory: a running VM
        assert refused.returncode != 0 and "hint: nestor vm start t1" in refused.stderr, refused.stderr
        assert show(whome, t1)["tpm"] is False  # no change
        nestor(whome, "vm", "start", t1)  # without a TPM, which the checkpoint's memory holds
        assert swtpms_under(whome) == []
        if how != ["--off"]:
            nestor(whome, "vm", "checkpoint", "new", t1, "bare", timeout=900)  # running, no TPM
            assert checkpoints(whome, t1)["bare"]["tpm"] is False
        if how == ["--off"]:
            applied = json.loads(nestor(whome, "vm", "checkpoint", "apply", t1, "live", "-o", "json",
                                        timeout=900).stdout)
            assert applied["tpm_restored"] is True
        else:
            text = nestor(whome, "vm", "checkpoint", "apply", t1, "live", timeout=900).stdout
            assert "TPM on again, as at the checkpoint" in text
        assert show(whome, t1)["tpm"] is True
        assert len(swtpms_under(whome)) == 1
        assert read_pcr(whome) == at_checkpoint
    bare = json.loads(nestor(whome, "vm", "checkpoint", "apply", t1, "bare", "-o", "json", timeout=900).stdout)
    assert bare["tpm_restored"] is False  # the other way: restarted without the TPM
    assert show(whome, t1)["tpm"] is False and swtpms_under(whome) == []
    assert (d / "tpm").is_dir()  # turned off as `set-tpm --off` does: its state kept
    nestor(whome, "vm", "checkpoint", "remove", t1, "bare", timeout=900)
    for restored in (True, None):  # None: the same setting, applied in the running QEMU
        applied = json.loads(nestor(whome, "vm", "checkpoint", "apply", t1, "live", "-o", "json",
                                    timeout=900).stdout)
        assert applied["tpm_restored"] is restored
        assert read_pcr(whome) == at_checkpoint
    assert "bare" not in checkpoints(whome, t1)


def test_a_saved_vm_is_refused_a_checkpoints_other_tpm_setting(whome: Path, t1: str) -> None:
    """A saved VM resumes with the devices it was saved with: applying a stopped checkpoint taken
    without the TPM is refused (one line and a hint) and changes nothing."""
    nestor(whome, "vm", "stop", t1, "--turn-off")
    nestor(whome, "vm", "set-tpm", t1, "--off")
    nestor(whome, "vm", "checkpoint", "new", t1, "off-bare")
    assert checkpoints(whome, t1)["off-bare"] == {**checkpoints(whome, t1)["off-bare"], "memory": False, "tpm": False}
    nestor(whome, "vm", "set-tpm", t1, "--on")
    nestor(whome, "vm", "start", t1)
    nestor(whome, "vm", "save", t1, timeout=600)
    refused = nestor(whome, "vm", "checkpoint", "apply", t1, "off-bare", check=False)
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 2 and "saved" in lines[0] and "--turn-off" in lines[1], refused.stderr
    assert show(whome, t1)["state"] == "saved" and show(whome, t1)["tpm"] is True  # no change
    nestor(whome, "vm", "checkpoint", "remove", t1, "off-bare")
    nestor(whome, "vm", "start", t1, timeout=600)  # resumes, with its TPM
    assert len(swtpms_under(whome)) == 1


def test_swtpm_goes_when_qemu_is_killed(whome: Path, t1: str) -> None:
    """kill -9 of QEMU: swtpm ends by itself (--terminate), and one that could not (stopped here
    with SIGSTOP, so it cannot see its connection go) is ended by the next command's reconciler."""
    d = vm_dir(whome, t1)
    qemu = int((d / "qemu.pid").read_text())
    [tpm] = swtpms_under(whome)
    os.kill(qemu, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while swtpms_under(whome) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert swtpms_under(whome) == [], "swtpm outlived its QEMU"
    assert (d / "tpm" / "tpm2-00.permall").is_file()  # the TPM's state stays in the VM's directory

    nestor(whome, "vm", "start", t1)  # the reconciler cleaned up the killed QEMU's files first
    qemu = int((d / "qemu.pid").read_text())
    [tpm] = swtpms_under(whome)
    os.kill(tpm, signal.SIGSTOP)
    os.kill(qemu, signal.SIGKILL)
    time.sleep(1)
    assert swtpms_under(whome) == [tpm]  # an orphan: its VM is no longer running
    listed = {vm["name"]: vm for vm in json.loads(nestor(whome, "vm", "list", "-o", "json").stdout)}
    assert listed[t1]["state"] == "off"  # the next command: its reconciler ends the orphan (or the
    deadline = time.monotonic() + 60     # daemon's, which saw QEMU go, is at it: SIGTERM, then SIGKILL)
    while (swtpms_under(whome) or (d / "swtpm.pid").exists()) and time.monotonic() < deadline:
        time.sleep(0.5)  # the pidfile goes just after the process: the reconciler may be between the two
    assert swtpms_under(whome) == [], "an orphan swtpm was left running"
    assert not (d / "swtpm.pid").exists()


def test_tpm_on_and_off_on_an_existing_vm(whome: Path) -> None:
    nestor(whome, "vm", "new", "t2", "--image", "debian-bookworm", "--memory", "1G", "--no-ssh-key")
    d = vm_dir(whome, "t2")
    assert show(whome, "t2")["tpm"] is False
    nestor(whome, "vm", "set-tpm", "t2", "--on")
    assert show(whome, "t2")["tpm"] is True and (d / "tpm").is_dir()
    (d / "tpm" / "tpm2-00.permall").write_bytes(b"kept")  # as if the TPM had been used
    nestor(whome, "vm", "set-tpm", "t2", "--off")
    assert show(whome, "t2")["tpm"] is False
    assert (d / "tpm" / "tpm2-00.permall").read_bytes() == b"kept"  # kept, like Hyper-V's key protector
    nestor(whome, "ps", "-c", "Enable-VMTPM -VMName t2")
    security = json.loads(nestor(whome, "ps", "-c", "Get-VMSecurity -VMName t2", "-o", "json").stdout)
    assert security[0]["TpmEnabled"] is True
    assert (d / "tpm" / "tpm2-00.permall").read_bytes() == b"kept"  # the same TPM is back
    nestor(whome, "vm", "checkpoint", "new", "t2", "with-tpm")  # stopped: a copy of tpm/ beside the disks'
    assert checkpoints(whome, "t2")["with-tpm"]["tpm"] is True
    nestor(whome, "vm", "set-tpm", "t2", "--off", "--delete-state")
    assert show(whome, "t2")["tpm"] is False and not (d / "tpm").exists()
    applied = json.loads(nestor(whome, "vm", "checkpoint", "apply", "t2", "with-tpm", "-o", "json").stdout)
    assert applied["tpm_restored"] is True  # the checkpoint's setting and its own copy of the state
    assert show(whome, "t2")["tpm"] is True and (d / "tpm" / "tpm2-00.permall").read_bytes() == b"kept"
    nestor(whome, "vm", "set-tpm", "t2", "--off")
    nestor(whome, "vm", "checkpoint", "new", "t2", "without")
    nestor(whome, "vm", "set-tpm", "t2", "--on")
    assert json.loads(nestor(whome, "vm", "checkpoint", "apply", "t2", "without", "-o", "json").stdout)[
        "tpm_restored"] is False
    assert show(whome, "t2")["tpm"] is False and (d / "tpm").is_dir()  # off, its state kept as with --off
    nestor(whome, "vm", "checkpoint", "remove", "t2", "with-tpm")
    assert not (d / "tpm-checkpoints" / "with-tpm").exists()
    assert set(checkpoints(whome, "t2")) == {"without"}
    nestor(whome, "vm", "set-tpm", "t2", "--off", "--delete-state")
    assert not (d / "tpm").exists()
    bad = nestor(whome, "vm", "set-tpm", "t2", "--on", "--delete-state", check=False)
    assert bad.returncode != 0 and "hint:" in bad.stderr


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
