"""A nested-host L1: a killed `vm exec` does not wedge the agent; an L1's disk is never deleted implicitly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nestor import bootplan
from tests.helpers import nestor, vm_dir

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]


def test_killed_exec_then_a_working_one(l1_home: Path) -> None:
    home = l1_home
    for _ in range(3):
        # A client killed while its command runs and while it polls the agent for the result.
        proc = subprocess.Popen([sys.executable, "-m", "nestor", "--home", str(home), "vm", "exec", "l1", "--",
                                 "sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x; sleep 3"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        result = nestor(home, "vm", "exec", "--timeout", "60", "l1", "--", "echo", "still-answering", timeout=90,
                        check=False)
        assert result.returncode == 0 and result.stdout.strip() == "still-answering", result.stderr


def raw_agent(home: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(vm_dir(home, "l1") / "qga.sock"))
    return sock


def echo(home: Path) -> None:
    result = nestor(home, "vm", "exec", "--timeout", "60", "l1", "--", "echo", "still-answering", timeout=90, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "still-answering", result.stderr


def test_what_a_killed_client_leaves_in_the_channel(l1_home: Path) -> None:
    """The two states a client killed at the wrong moment leaves, made on purpose."""
    home = l1_home
    with raw_agent(home) as sock:  # half a request: still in the agent's parser
        sock.sendall(b'{"execute": "guest-exec", "arguments": {"path": "/bin/true"')
    echo(home)
    with raw_agent(home) as sock:  # an answer of 400 KB nobody reads to the end
        sock.sendall(json.dumps({"execute": "guest-exec", "arguments": {
            "path": "/bin/sh", "arg": ["-c", "head -c 300000 /dev/zero | tr '\\0' x"], "capture-output": True}}).encode())
        answer = b""
        while b"\n" not in answer:
            answer += sock.recv(4096)
        pid = json.loads(answer)["return"]["pid"]
        time.sleep(3)
        sock.sendall(json.dumps({"execute": "guest-exec-status", "arguments": {"pid": pid}}).encode())
        sock.recv(100)
    echo(home)


def test_overlay_is_never_deleted_implicitly(l1_home: Path) -> None:
    home = l1_home
    nestor(home, "vm", "new", "disk1", "--image", "nested-host", "--memory", "256M")
    nestor(home, "vm", "start", "disk1")
    nestor(home, "vm", "stop", "disk1", "--turn-off")
    directory = vm_dir(home, "disk1")
    overlay, stamp = directory / bootplan.OVERLAY, directory / bootplan.OVERLAY_BASE
    inode = overlay.stat().st_ino
    # The base image changed since (as after `image build nested-host --force`).
    stamp.write_text(stamp.read_text().replace(" ", " 1", 1))
    result = nestor(home, "vm", "start", "disk1", check=False)
    assert result.returncode != 0 and "nestor vm reset-disk disk1" in result.stderr, result.stderr
    assert overlay.stat().st_ino == inode  # the user's data is still there
    refused = nestor(home, "vm", "reset-disk", "disk1", check=False)  # no --yes, no terminal: not done
    assert refused.returncode != 0 and overlay.exists()
    assert "discarded" in nestor(home, "vm", "reset-disk", "disk1", "--yes").stdout
    assert not overlay.exists()
    nestor(home, "vm", "start", "disk1")
    assert overlay.exists() and overlay.stat().st_mode & 0o777 == 0o600
    nestor(home, "vm", "remove", "disk1", "--force")
