"""Real VMs under QEMU: boot, the seed's processor rules, stop, remove, crash reconciliation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nestor import paths
from nestor.engine import process
from nestor.images.appliance import BOOT_LINE
from tests.helpers import nestor, show, vm_dir, wait_for_text

pytestmark = pytest.mark.vm

SVM_SCRIPT = "#!/bin/sh\necho \"svm-count=$(grep -c -w svm /proc/cpuinfo)\"\n"


def qemus_of(directory: Path) -> list[int]:
    """Every process on the machine whose command line names this VM directory."""
    marker = str(directory / paths.QMP_SOCK)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and "qemu-system" in cmdline:
            found.append(int(entry.name))
    return found



def boot(home: Path, name: str, *extra: str, script: str = SVM_SCRIPT) -> Path:
    run = home / f"{name}.sh"
    run.write_text(script)
    nestor(home, "vm", "new", name, "--run", str(run), "--memory", "256M", *extra)
    nestor(home, "vm", "start", name)
    directory = vm_dir(home, name)
    wait_for_text(directory / paths.SERIAL_LOG, BOOT_LINE)
    return directory


@pytest.mark.parametrize(("nested", "expect_svm"), [(True, True), (False, False)])
def test_guest_sees_svm_only_with_nesting(home: Path, nested: bool, expect_svm: bool) -> None:
    extra = ("--expose-virtualization-extensions",) if nested else ()
    directory = boot(home, "g", *extra)
    log = wait_for_text(directory / paths.SERIAL_LOG, "svm-count=")
    count = int(log.split("svm-count=")[1].split()[0])
    assert (count > 0) == expect_svm, log[-2000:]
    info = show(home, "g")
    assert info["state"] == "running" and info["nested"] is nested
    assert info["accelerator"] == "tcg"
    assert info["cpu_model"] == ("max" if nested else "max,svm=off")
    assert isinstance(info["pid"], int) and info["uptime"] is not None
    assert info["hypervisor_running"] is False
    listed = json.loads(nestor(home, "vm", "list", "-o", "json").stdout)
    assert [(v["name"], v["state"]) for v in listed] == [("g", "running")]
    assert BOOT_LINE in nestor(home, "vm", "log", "g").stdout


def test_nesting_cannot_change_while_running_and_stop_modes(home: Path) -> None:
    directory = boot(home, "r")
    for flag in ("on", "off"):
        result = nestor(home, "vm", "set-processor", "r", "--expose-virtualization-extensions", flag, check=False)
        assert result.returncode != 0
        assert "stop it first (nested virtualization can only be changed while the VM is off)" in result.stderr
        assert "Traceback" not in result.stderr
    assert show(home, "r")["nested"] is False
    result = nestor(home, "vm", "set-processor", "r", "--count", "2", check=False)
    assert result.returncode != 0 and show(home, "r")["vcpus"] == 1

    # Graceful: the guest hears the ACPI power button and powers itself off.
    pid = process.live_pid(directory)
    out = nestor(home, "vm", "stop", "r", "--timeout", "60").stdout
    assert "shut down" in out, out
    assert pid is not None and not qemus_of(directory)
    assert show(home, "r")["state"] == "off"
    assert "reboot: Power down" in (directory / paths.SERIAL_LOG).read_text(errors="replace")

    # Now off: the rule allows the change.
    nestor(home, "vm", "set-processor", "r", "--expose-virtualization-extensions", "on", "--count", "2")
    assert show(home, "r")["nested"] is True and show(home, "r")["vcpus"] == 2

    # Turn-off is immediate.
    nestor(home, "vm", "start", "r")
    wait_for_text(directory / paths.SERIAL_LOG, "svm-count=", timeout=90)
    assert "turned off" in nestor(home, "vm", "stop", "r", "--turn-off").stdout
    assert show(home, "r")["state"] == "off" and not qemus_of(directory)

    nestor(home, "vm", "remove", "r")
    assert not directory.exists()
    assert nestor(home, "vm", "show", "r", check=False).returncode == 3


def test_remove_running_needs_force(home: Path) -> None:
    directory = boot(home, "f")
    result = nestor(home, "vm", "remove", "f", check=False)
    assert result.returncode != 0 and "--force" in result.stderr and qemus_of(directory)
    nestor(home, "vm", "remove", "f", "--force")
    assert not qemus_of(directory) and not directory.exists()


def test_killed_qemu_shows_off_and_starts_again(home: Path) -> None:
    directory = boot(home, "k")
    pid = process.live_pid(directory)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    process.wait_exit(pid, 10)
    assert show(home, "k")["state"] == "off"
    nestor(home, "vm", "start", "k")
    assert show(home, "k")["state"] == "running"
    assert len(qemus_of(directory)) == 1


def test_killed_nestor_during_start_is_reconciled(home: Path) -> None:
    run = home / "s.sh"
    run.write_text(SVM_SCRIPT)
    nestor(home, "vm", "new", "c", "--run", str(run), "--memory", "256M")
    directory = vm_dir(home, "c")
    for delay in (0.15, 0.3, 0.6):
        proc = subprocess.Popen([sys.executable, "-m", "nestor", "--home", str(home), "vm", "start", "c"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = show(home, "c")["state"]
        assert state in ("running", "off")
        if state == "off":
            nestor(home, "vm", "start", "c")
        assert len(qemus_of(directory)) == 1, "exactly one QEMU after a killed start"
        wait_for_text(directory / paths.SERIAL_LOG, "svm-count=")
        nestor(home, "vm", "stop", "c", "--turn-off")
        assert not qemus_of(directory)


def test_concurrent_starts_make_one_qemu(home: Path) -> None:
    run = home / "s.sh"
    run.write_text(SVM_SCRIPT)
    nestor(home, "vm", "new", "two", "--run", str(run), "--memory", "256M")
    directory = vm_dir(home, "two")
    argv = [sys.executable, "-m", "nestor", "--home", str(home), "vm", "start", "two"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        results.append((proc.returncode, err))
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0 and codes[1] != 0, results
    assert any("already running" in err for _, err in results), results
    assert len(qemus_of(directory)) == 1


def test_console_takes_input_and_gives_output(home: Path) -> None:
    boot(home, "con")
    result = subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), "vm", "console", "con"],
                            input="\necho console-$((6 * 7))\n", capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "console-42" in result.stdout, result.stdout
    result = nestor(home, "vm", "console", "nope", check=False)
    assert result.returncode == 3 and result.stderr.startswith("error: ")


def test_boot_any_kernel_with_kernel_initrd_append(home: Path, image_store: Path) -> None:
    from nestor.images.appliance import load_appliance

    image = load_appliance(image_store)
    assert image is not None
    nestor(home, "vm", "new", "raw", "--kernel", str(image.kernel.vmlinux), "--initrd", str(image.initrd),
           "--append", "console=ttyS0 nestor.hostname=custom-kernel", "--memory", "256M")
    nestor(home, "vm", "start", "raw")
    wait_for_text(vm_dir(home, "raw") / paths.SERIAL_LOG, BOOT_LINE)
    assert "nestor.hostname=custom-kernel" in " ".join(json.loads(
        (vm_dir(home, "raw") / "launch.json").read_text())["argv"])
    assert show(home, "raw")["image"] == str(image.kernel.vmlinux)
