"""The log cap under the real writers: copytruncate is safe only if the writer appends (O_APPEND).

dnsmasq opens its --log-facility file itself; this checks, on the real dnsmasq, that a log cut
by nestor's cap continues at offset 0 (no hole of zero bytes up to the old size), as for QEMU's
serial.log (tests/integration/test_files.py). The dnsmasq runs in a namespace this test made,
on its loopback only, and is ended by its PID.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestor.engine import seriallog
from nestor.net import dnsmasq


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"nt-log-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=30)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)


def test_a_cut_dnsmasq_log_continues_at_the_start(tmp_path: Path, netns: str) -> None:
    pidfile, log = tmp_path / "dnsmasq-1.pid", tmp_path / "dnsmasq-1.log"
    subprocess.run(["ip", "netns", "exec", netns, "dnsmasq", "--conf-file=/dev/null", f"--pid-file={pidfile}",
                    f"--log-facility={log}", "--port=5353", "--listen-address=127.0.0.1", "--bind-interfaces",
                    "--no-resolv", "--no-hosts"], check=True, timeout=30)
    try:
        end = time.monotonic() + 30
        while b"started" not in (log.read_bytes() if log.exists() else b"") and time.monotonic() < end:
            time.sleep(0.05)
        with log.open("ab") as grow:  # as a flooding guest's DHCP packets would make it
            grow.write(b"x" * (2 * seriallog.MIN_LOG))
        assert seriallog.enforce(log, seriallog.MIN_LOG)
        assert log.stat().st_size == 0
        pid = dnsmasq.live_pid(pidfile)
        assert pid is not None
        os.kill(pid, signal.SIGUSR1)  # dnsmasq writes its statistics to the log
        while log.stat().st_size == 0 and time.monotonic() < end:
            time.sleep(0.05)
        data = log.read_bytes()
        assert data and not data.startswith(b"\0"), data[:80]  # appended at 0: no hole
        assert b"cache size" in data
        assert seriallog.rotated(log).read_bytes().endswith(b"x" * 64)
    finally:
        dnsmasq.stop(pidfile)
