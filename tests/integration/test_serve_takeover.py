"""`nestor serve` after `vm start` (or `quickstart --keep`) takes over from the on-demand daemon
the CLI started: it stops that one by the PID of its pidfile and serves; the VMs run on. A daemon
a user started (not on demand) is never taken over: the second is refused, naming the PID."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from nestor import paths, pids
from nestor.service import daemon as daemon_mod
from tests.helpers import Daemon, free_port, nestor, show

pytestmark = pytest.mark.vm


def test_serve_takes_over_from_the_on_demand_daemon(home: Path) -> None:
    nestor(home, "vm", "new", "g", "--memory", "256M")
    nestor(home, "vm", "start", "g")  # starts the on-demand daemon
    deadline = time.monotonic() + 60
    while (on_demand := daemon_mod.running_pid(paths.Home(home))) is None:
        assert time.monotonic() < deadline, "the on-demand daemon did not come up"
        time.sleep(0.2)
    assert "--on-demand" in pids.cmdline(on_demand)
    run = Path(tempfile.mkdtemp(prefix="nt-take-", dir="/tmp"))
    served = Daemon(home, run / "api.sock", "--listen", f"127.0.0.1:{free_port()}")
    try:
        served.wait_ready(60)
        assert pids.cmdline(on_demand) == []  # stopped (a zombie of no parent of ours is reaped by init)
        assert daemon_mod.running_pid(paths.Home(home)) == served.proc.pid
        assert f"took over {home.resolve()} from its on-demand daemon (pid {on_demand}" in served.log.read_text()
        assert show(home, "g")["state"] == "running"  # its VM ran on
        # A second daemon for the home is refused: the running one is a user's, not on demand.
        second = nestor(home, "serve", "--socket", str(run / "other.sock"), check=False, timeout=60)
        assert second.returncode == 4, (second.stdout, second.stderr)
        assert f"another nestor serve (pid {served.proc.pid}) runs for" in second.stderr
        assert f"hint: stop it first (one daemon per home): kill {served.proc.pid}" in second.stderr
        assert served.proc.poll() is None
    finally:
        assert served.stop() == 0
        shutil.rmtree(run, ignore_errors=True)
