"""A VM's virtual TPM 2.0: one swtpm per running VM, its state private in the VM's directory.

The state lives in ``VMDIR/tpm/`` (0700). Where nestor is root, swtpm runs as the QEMU user
(engine/runas.py) and the directory is that user's: swtpm is started with its working directory
there and names everything relative to it (``dir=.``, ``swtpm.sock``), so it never needs to
walk through nestor's root-only home. QEMU connects to the control socket as root before it
drops root itself. ``--terminate``: swtpm ends when QEMU's connection goes (QEMU died or
stopped); nestor also ends it by its pidfile on stop and in the reconciler.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from ..errors import EngineError, HostError
from ..files import open_private, private_dir
from ..pids import pid_from, terminate
from .runas import QemuUser

BINARY = "swtpm"
STATE_DIR = "tpm"
SOCK = "swtpm.sock"
PIDFILE = "swtpm.pid"
LOG = "swtpm.log"
START_TIMEOUT = 10.0


def state_dir(vm_dir: Path) -> Path:
    return vm_dir / STATE_DIR


def socket_path(vm_dir: Path) -> Path:
    return state_dir(vm_dir) / SOCK


def make_state(vm_dir: Path, user: QemuUser | None) -> Path:
    """The VM's TPM state directory (empty: swtpm manufactures the TPM at its first start)."""
    d = state_dir(vm_dir)
    private_dir(d, parents=False)
    if user is not None:
        os.chown(d, user.uid, user.gid)
    return d


def live_pid(vm_dir: Path) -> int | None:
    """This VM's swtpm if alive: the pidfile's process, running swtpm in this VM's state directory."""
    pid = pid_from(vm_dir / PIDFILE, BINARY)
    if pid is None:
        return None
    try:
        if os.readlink(f"/proc/{pid}/cwd") != str(state_dir(vm_dir)):
            return None
    except OSError:
        return None
    return pid


def start(vm_dir: Path, user: QemuUser | None) -> int:
    """Start swtpm for this VM (as `user` when given); return its PID once its socket listens."""
    d = state_dir(vm_dir)
    if not d.is_dir():
        make_state(vm_dir, user)
    if user is not None:
        os.chown(d, user.uid, user.gid)  # a state dir copied back by a checkpoint is root's
        for entry in d.iterdir():
            os.chown(entry, user.uid, user.gid, follow_symlinks=False)
    stop(vm_dir)
    (d / SOCK).unlink(missing_ok=True)
    argv = [BINARY, "socket", "--tpm2", "--tpmstate", "dir=.", "--ctrl", f"type=unixio,path={SOCK}", "--terminate"]
    # No `ip netns exec`: swtpm has no network, only a socket in the file system, which QEMU reaches
    # from any namespace.
    uid, gid = (user.uid, user.gid) if user is not None else (None, None)
    groups: list[int] | None = [] if user is not None else None
    log_path = vm_dir / LOG
    with os.fdopen(open_private(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab") as log:
        try:
            proc = subprocess.Popen(argv, cwd=d, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, close_fds=True, user=uid, group=gid,
                                    extra_groups=groups)
        except FileNotFoundError:
            raise HostError("swtpm is not installed: a VM with a TPM needs it",
                            hint="apt-get install swtpm swtpm-tools (scripts/setup)") from None
    (vm_dir / PIDFILE).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise EngineError(f"swtpm exited at start (status {code})", hint=f"see {log_path}")
        if (d / SOCK).exists():
            return proc.pid
        time.sleep(0.01)
    terminate(proc.pid)
    raise EngineError(f"swtpm did not open its socket within {START_TIMEOUT:.0f} s", hint=f"see {log_path}")


def stop(vm_dir: Path) -> None:
    """End this VM's swtpm if it still runs; remove its pidfile."""
    pid = live_pid(vm_dir)
    if pid is not None:
        terminate(pid)
    (vm_dir / PIDFILE).unlink(missing_ok=True)
