"""The home's daemon (`nestor serve`): found by its pidfile, started on demand, stopped by PID.

One daemon per home holds what must outlive a command: the memory balancer of every dynamic VM,
the cap on every VM's serial log (engine/seriallog.py) and the API. The CLI runs its use cases
in-process and starts the daemon whenever a VM starts (`ensure_running`; and again from any
command that sees a running VM while no daemon runs, e.g. after a kill), so no user ever needs
a manual step. A daemon started that way ends by itself once no VM has run for a while.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

from .. import faults, paths, pids
from ..files import write_private

START_WAIT = 15.0  # the daemon writes its pidfile after its imports (~1 s on a host, more in an L1)
MARKER = "serve"

_serving: Path | None = None  # the home this process is the daemon of (set by the daemon itself)


def mark_serving(home: paths.Home) -> None:
    """Called by the daemon once it holds its home's claim: its own requests must not start
    another daemon (an L1's `vm start` through the API would spawn one per request otherwise)."""
    global _serving
    _serving = home.root.resolve()


def serving(home: paths.Home) -> bool:
    """Is this process the daemon of `home`?"""
    return _serving is not None and _serving == home.root.resolve()


def running_pid(home: paths.Home) -> int | None:
    """The live daemon of this home: its pidfile names a process whose argv is ours exactly."""
    pid = pids.pid_from(home.daemon_pidfile, MARKER)
    if pid is None:
        return None
    args = pids.cmdline(pid)
    return pid if str(home.root.resolve()) in args and MARKER in args else None


def _spawned_file(home: paths.Home) -> Path:
    return home.root / "serve.spawned"  # a daemon started but (maybe) not yet up: its PID


def starting_pid(home: paths.Home) -> int | None:
    """A daemon `ensure_running` started that has not claimed the home yet (its imports take
    a second or more), vouched for by its command line as `running_pid` does."""
    pid = pids.pid_from(_spawned_file(home), MARKER)
    if pid is None:
        return None
    args = pids.cmdline(pid)
    return pid if str(home.root.resolve()) in args and MARKER in args else None


def ensure_running(home: paths.Home, on_demand: bool = True, wait: bool = True) -> int | None:
    """Start the daemon if it is not running; return its PID (None if it did not come up).
    With `wait=False` return at once (None while it starts): `vm start` does not wait for it."""
    pid = running_pid(home)
    if pid is not None:
        return pid
    pid = starting_pid(home)
    if pid is None:
        argv = [sys.executable, "-m", "nestor", "--home", str(home.root.resolve()), MARKER]
        if on_demand:
            argv.append("--on-demand")
        env = {k: v for k, v in os.environ.items() if k != faults.ENV}  # a test's kill is for the command only
        with open(home.daemon_log, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, close_fds=True, env=env)
        pid = proc.pid
        write_private(_spawned_file(home), f"{pid}\n")
    if not wait:
        return None
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        up = running_pid(home)
        if up is not None or starting_pid(home) != pid:
            return running_pid(home)  # up, or another daemon won the race (ours exited)
        time.sleep(0.05)
    return None


def stop(home: paths.Home, timeout: float = 10.0) -> bool:
    """End this home's daemon, and one still starting (only PIDs vouched for by their command
    lines). True if one was running."""
    found = False
    for pid in (starting_pid(home), running_pid(home)):
        if pid is not None:
            pids.terminate(pid, timeout)
            found = True
    return found


def on_demand_pid(home: paths.Home) -> int | None:
    """This home's daemon (running or starting) if it was started on demand (`--on-demand`, by
    the CLI when a VM started): the one a `nestor serve` takes over from."""
    for pid in (running_pid(home), starting_pid(home)):
        if pid is not None and "--on-demand" in pids.cmdline(pid):
            return pid
    return None


def take_over(home: paths.Home, claim: Claim, attempts: int = 5, timeout: float = 10.0) -> int | None:
    """Claim the home from its on-demand daemon: stop it by the PID of nestor's own records
    (SIGTERM: it ends cleanly, its VMs run on), then claim. The PID it stopped, or None when the
    home is held by a daemon that was not started on demand (a user's or systemd's: left alone)."""
    stopped = None
    for _ in range(attempts):  # a `vm start` meanwhile may start another on-demand one: stop that too
        pid = on_demand_pid(home)
        if pid is None:
            if claim.acquire():
                return stopped
            if running_pid(home) is not None:
                return None
            time.sleep(0.1)  # the one we stopped still holds its lock for a moment
            continue
        pids.terminate(pid, timeout)
        stopped = pid
        if claim.acquire():
            return stopped
    return None


class Claim:
    """The daemon's claim on its home: an flock held for its lifetime, and the pidfile.

    A second daemon for the same home fails to claim and exits, so racing `ensure_running`
    calls never leave two balancers moving one VM's memory.
    """

    def __init__(self, home: paths.Home) -> None:
        self.home = home
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        self.home.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.home.root / "serve.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        tmp = self.home.daemon_pidfile.with_suffix(".tmp")
        tmp.write_text(f"{os.getpid()}\n")
        tmp.replace(self.home.daemon_pidfile)
        with contextlib.suppress(OSError, ValueError):
            if int(_spawned_file(self.home).read_text().strip()) == os.getpid():
                _spawned_file(self.home).unlink()  # up now: running_pid finds it
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if int(self.home.daemon_pidfile.read_text().strip()) == os.getpid():
                self.home.daemon_pidfile.unlink()
        except (OSError, ValueError):
            pass
        os.close(self._fd)
        self._fd = None


def socket_path(home: paths.Home, override: Path | None = None) -> Path:
    return override or home.api_socket
