"""`nestor vm start` through the home's warm daemon (nestor/warm_start.py) does what the in-process
CLI does: the same output, errors, exit codes and audit rows, and QEMU already runs as its
unprivileged user when the command returns. Real VMs, a real daemon.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nestor import paths
from nestor.engine import process, runas
from nestor.images.appliance import BOOT_LINE
from nestor.service import daemon
from tests.helpers import nestor, vm_dir, wait_for_text

pytestmark = pytest.mark.vm


def start(home: Path, name: str, in_process: bool) -> tuple[subprocess.CompletedProcess[str], int]:
    """`nestor vm start NAME` as a user runs it, and that CLI's pid. `in_process`: an environment
    the daemon does not have, so the CLI starts QEMU itself."""
    env = {**os.environ, "NESTOR_TEST_IN_PROCESS": str(time.monotonic_ns())} if in_process else None
    proc = subprocess.Popen([sys.executable, "-m", "nestor", "--home", str(home), "vm", "start", name],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = proc.communicate(timeout=180)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), proc.pid


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def last_audit(home: Path) -> dict[str, object]:
    rows: list[dict[str, object]] = json.loads(nestor(home, "audit", "-o", "json").stdout)
    return rows[-1]


def wait_daemon(home: Path) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pid = daemon.running_pid(paths.Home(home))
        if pid is not None:
            return pid
        time.sleep(0.1)
    raise AssertionError(f"no daemon for {home}:\n{(home / 'serve.log').read_text(errors='replace')[-2000:]}")


def test_vm_start_through_the_warm_daemon_is_the_clis(home: Path) -> None:
    nestor(home, "vm", "new", "b", "--memory", "256M")
    first, _ = start(home, "b", in_process=False)  # no daemon yet: in-process, and it starts one
    assert first.returncode == 0, first.stderr
    directory = vm_dir(home, "b")
    daemon_pid = wait_daemon(home)
    assert parent_of(process.live_pid(directory) or 0) != daemon_pid
    nestor(home, "vm", "stop", "b", "--turn-off")

    warm, cli_pid = start(home, "b", in_process=False)
    assert warm.returncode == 0, warm.stderr
    pid = process.live_pid(directory)
    assert pid is not None and parent_of(pid) == daemon_pid  # the daemon spawned this QEMU
    assert re.fullmatch(rf"vm 'b' started \(pid {pid}, \w+, -cpu \S+\)\n", warm.stdout), warm.stdout
    assert warm.stderr == ""
    wanted = runas.wanted()
    if wanted is not None:  # as root: QEMU has dropped to its user before `vm start` returned
        uid = str(runas.lookup(wanted, "runas").uid)
        status = Path(f"/proc/{pid}/status").read_text()
        assert f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}\n" in status, status
    row = last_audit(home)
    assert (row["via"], row["uid"], row["pid"], row["operation"], row["target"], row["result"]) == \
        ("cli", os.getuid(), cli_pid, "vm.start", "b", "ok")
    wait_for_text(directory / paths.SERIAL_LOG, BOOT_LINE, timeout=180)

    # Refusals read the same either way, and are audited the same.
    for name, kind, code in (("b", "wrong_state", 5), ("nope", "not_found", 3)):
        answers = []
        for in_process in (False, True):
            result, cli_pid = start(home, name, in_process)
            row = last_audit(home)
            assert (row["via"], row["pid"], row["target"], row["result"]) == ("cli", cli_pid, name, kind)
            answers.append((result.returncode, result.stdout, result.stderr))
        assert answers[0] == answers[1] and answers[0][0] == code, answers
    assert daemon.running_pid(paths.Home(home)) == daemon_pid
