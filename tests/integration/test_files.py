"""nestor's files on a real host: private modes whatever the umask, and a guest cannot fill the disk."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nestor import paths
from nestor.engine import seriallog
from nestor.images.appliance import BOOT_LINE
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


def pumps_of(directory: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"nestor.engine.seriallog" in cmdline and str(directory).encode() in cmdline:
                found.append(int(entry.name))
    return found


def test_private_modes_under_umask_zero_and_a_capped_console(home: Path, tmp_path: Path) -> None:
    cap = 64 << 10
    flood = tmp_path / "flood.sh"
    flood.write_text("#!/bin/sh\nsecret=1\nyes flood-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx | head -n 6000\n"
                     "echo flood-done\n")
    os.chmod(home, 0o777)  # made loose on purpose: nestor tightens an existing home
    loose_nestor(home, "vm", "new", "f", "--run", str(flood), "--memory", "128M")
    env = {seriallog.MAX_LOG_ENV: str(cap)}
    loose_nestor(home, "vm", "start", "f", env=env)
    directory = vm_dir(home, "f")
    wait_for_text(directory / paths.SERIAL_LOG, BOOT_LINE)  # before the flood passes the cap
    # `vm log --until` follows the console across rotations.
    loose_nestor(home, "vm", "log", "f", "--until", "flood-done", "--timeout", "150", timeout=180)
    log, older = directory / paths.SERIAL_LOG, seriallog.rotated(directory / paths.SERIAL_LOG)
    assert older.exists(), "the flood (~400 KB) never rotated the log"
    assert log.stat().st_size <= cap and older.stat().st_size <= cap
    assert 0 < len(loose_nestor(home, "vm", "log", "f", "--tail", "100").encode()) <= 100  # readers take the tail
    assert mode(home) == 0o700
    for path in (directory, home / "vms", home / "locks"):
        assert mode(path) == 0o700, path
    for path in (home / paths.DB_NAME, log, older, directory / paths.LAUNCH, directory / paths.RUN_CPIO,
                 directory / paths.QEMU_LOG, directory / paths.INITRD, directory / paths.SERIAL_PIPE):
        assert mode(path) == 0o600, path
    assert pumps_of(directory), "no log pump runs for the VM"
    loose_nestor(home, "vm", "stop", "f", "--turn-off")
    deadline = time.monotonic() + 5
    while pumps_of(directory) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pumps_of(directory), "the log pump outlived its QEMU"


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
