"""nestor's files on a real host: private modes whatever the umask, and a guest cannot fill the disk."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nestor import paths
from nestor.engine import process, seriallog
from tests.helpers import vm_dir, wait_for_text

pytestmark = pytest.mark.vm


def loose_nestor(home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """The real CLI under umask 000: nestor must not rely on the umask for its modes."""
    result = subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), *args], capture_output=True,
                            text=True, timeout=timeout, check=False, preexec_fn=lambda: os.umask(0),
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr
    return result.stdout


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def processes_of(home: Path) -> list[int]:
    """Every process whose command line names the home (QEMU, nestor's daemon, anything else)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(home).encode() in cmdline:
                found.append(int(entry.name))
    return found


def appends(pid: int, log: Path) -> bool:
    """QEMU holds `log` open with O_APPEND (so a truncation by the daemon is safe)."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == str(log):
                flags = int((Path(f"/proc/{pid}/fdinfo") / fd.name).read_text().split("flags:")[1].split()[0], 8)
                return bool(flags & os.O_APPEND)
        except OSError:
            continue
    raise AssertionError(f"QEMU {pid} does not hold {log} open")


FLOOD = """#!/bin/sh
secret=1
yes flood-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx > /dev/ttyS0 &
pid=$!
sleep {seconds}
kill $pid
sleep 1
echo flood-done
"""
SLACK = 512 << 10  # the stated bound: cap + R x (CHECK_INTERVAL + scheduling), R measured below (~100 KB/s)


def sample(log: Path, seconds: float) -> tuple[int, float]:
    """The largest size serial.log reached, and the fastest growth seen between two looks (B/s)."""
    biggest, rate, last = 0, 0.0, None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now, size = time.monotonic(), log.stat().st_size
        biggest = max(biggest, size)
        if last is not None and size >= last[1] and now - last[0] >= 0.2:
            rate = max(rate, (size - last[1]) / (now - last[0]))
        if last is None or size < last[1] or now - last[0] >= 0.2:
            last = (now, size)
        time.sleep(0.01)
    return biggest, rate


def test_private_modes_under_umask_zero_and_a_capped_console(home: Path, tmp_path: Path) -> None:
    """A guest floods its serial port: QEMU appends to serial.log itself, the home's daemon (the
    only nestor process besides QEMU) keeps it and serial.log.1 within cap + SLACK; killed, the
    daemon comes back with the next command and caps again."""
    from nestor.service import daemon

    cap = 64 << 10
    flood = tmp_path / "flood.sh"
    flood.write_text(FLOOD.format(seconds=40))
    os.chmod(home, 0o777)  # made loose on purpose: nestor tightens an existing home
    loose_nestor(home, "vm", "new", "f", "--run", str(flood), "--memory", "128M")
    env = {seriallog.MAX_LOG_ENV: str(cap)}
    loose_nestor(home, "vm", "start", "f", env=env)
    directory = vm_dir(home, "f")
    log, older = directory / paths.SERIAL_LOG, seriallog.rotated(directory / paths.SERIAL_LOG)
    qemu = process.live_pid(directory)
    assert qemu is not None and appends(qemu, log)
    wait_for_text(log, "flood-xxx", timeout=120)
    biggest, rate = sample(log, 12)
    first = daemon.running_pid(paths.Home(home))
    assert first is not None, "vm start did not start the home's daemon"
    assert sorted(processes_of(home)) == sorted([qemu, first]), "a process per VM besides QEMU"
    print(f"serial flood: {rate / 1e3:.0f} KB/s at most; serial.log reached {biggest} B (cap {cap})")
    assert older.exists() and older.stat().st_size <= cap + SLACK
    assert biggest <= cap + SLACK

    os.kill(first, signal.SIGKILL)  # the daemon dies: the log grows unwatched...
    process.wait_exit(first, 10)
    time.sleep(4)
    assert log.stat().st_size > cap, "the log did not grow without the daemon: was it the daemon that capped it?"
    before = seriallog.identity(older)
    loose_nestor(home, "vm", "log", "f", "--tail", "10", env=env)  # a reader applies the cap too
    assert seriallog.identity(older) != before, "vm log did not rotate a log over its cap"
    assert daemon.running_pid(paths.Home(home)) is None
    loose_nestor(home, "vm", "list", env=env)  # the next command that sees the VM brings the daemon back
    deadline = time.monotonic() + 60
    while daemon.running_pid(paths.Home(home)) in (None, first) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert daemon.running_pid(paths.Home(home)) not in (None, first)
    while log.stat().st_size > cap + SLACK and time.monotonic() < deadline:
        time.sleep(0.1)
    biggest, _ = sample(log, 5)
    assert biggest <= cap + SLACK and older.stat().st_size <= cap + SLACK

    # `vm log --until` follows the console across rotations; readers take the tail.
    loose_nestor(home, "vm", "log", "f", "--until", "flood-done", "--timeout", "150", timeout=180)
    assert log.stat().st_size <= cap + SLACK and older.stat().st_size <= cap + SLACK
    assert 0 < len(loose_nestor(home, "vm", "log", "f", "--tail", "100").encode()) <= 100
    assert mode(home) == 0o700
    for path in (directory, home / "vms", home / "locks"):
        assert mode(path) == 0o700, path
    for path in (home / paths.DB_NAME, log, older, directory / paths.LAUNCH, directory / paths.RUN_CPIO,
                 directory / paths.QEMU_LOG, directory / paths.INITRD):
        assert mode(path) == 0o600, path
    loose_nestor(home, "vm", "stop", "f", "--turn-off")


def test_an_old_loose_home_is_tightened_on_first_use(tmp_path: Path) -> None:
    home = tmp_path / "old"
    loose_nestor(home, "vm", "new", "a", "--kernel", "/bin/true")
    vm = home / "vms" / "1"
    for path, loose in ((home, 0o755), (home / "vms", 0o755), (vm, 0o755), (home / paths.DB_NAME, 0o644)):
        os.chmod(path, loose)
    (vm / paths.QEMU_LOG).write_text("old log\n")
    os.chmod(vm / paths.QEMU_LOG, 0o644)
    loose_nestor(home, "vm", "list")  # a read-only command tightens too
    assert [mode(p) for p in (home, home / "vms", vm, home / paths.DB_NAME, vm / paths.QEMU_LOG)] == [
        0o700, 0o700, 0o700, 0o600, 0o600]


def test_disk_image_vm_files_are_private_under_umask_zero(home: Path, tmp_path: Path) -> None:
    """A disk-image VM's directory, overlay/blank disks, NVRAM and cloud-init seed (the user's key
    and user-data) are root's alone, whatever the umask (qemu-img and copies follow the umask)."""
    from nestor import cloudinit

    iso = tmp_path / "media.iso"
    blob = bytearray(1 << 20)
    blob[0x8001:0x8006] = b"CD001"  # the ISO 9660 signature nestor checks (the medium is never booted here)
    iso.write_bytes(bytes(blob))
    loose_nestor(home, "vm", "new", "g", "--iso", str(iso), "--disk-size", "64M", "--generation", "2")
    loose_nestor(home, "vm", "disk", "add", "g", "--name", "data", "--size", "16M")
    directory = vm_dir(home, "g")
    assert mode(directory) == 0o700
    made = sorted(p.name for p in directory.iterdir())
    assert {"root.qcow2", "disk-data.qcow2", "nvram.fd"} <= set(made), made
    for path in directory.iterdir():
        assert mode(path) == 0o600, path

    spec = cloudinit.SeedSpec(instance_id="i-1", hostname="g", ssh_keys=("ssh-ed25519 AAAA test",))
    old = os.umask(0)
    try:
        seed = cloudinit.write_seed(spec, directory)
    finally:
        os.umask(old)
    assert mode(seed) == 0o600 and mode(directory / "seed") == 0o700
    for path in (directory / "seed").iterdir():
        assert mode(path) == 0o600, path
