"""`vm log NAME --until TEXT` without --timeout on a VM that is off reads its log and ends (issue 18):
found, exit 0; not there, a one-line refusal saying the VM is off, non-zero. Through the CLI and the API.
Before, both waited for ever (the API held a worker thread for good)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from nestor import paths
from nestor.client import Client
from nestor.errors import StateError
from nestor.images.appliance import BOOT_LINE
from tests.helpers import Daemon, nestor, vm_dir, wait_for_text

pytestmark = pytest.mark.vm


def test_until_on_a_stopped_vm_reads_and_ends(home: Path) -> None:
    nestor(home, "vm", "new", "g", "--memory", "256M")
    nestor(home, "vm", "start", "g")
    wait_for_text(vm_dir(home, "g") / paths.SERIAL_LOG, BOOT_LINE)
    nestor(home, "vm", "stop", "g", "--turn-off")
    # The CLI (a hang is the subprocess's timeout: an error here).
    found = nestor(home, "vm", "log", "g", "--until", BOOT_LINE, timeout=60)
    assert BOOT_LINE in found.stdout
    missing = nestor(home, "vm", "log", "g", "--until", "no-such-text", timeout=60, check=False)
    assert missing.returncode == 5, (missing.stdout, missing.stderr)
    assert "error: vm 'g' is off and 'no-such-text' is not in its console output" in missing.stderr
    assert "hint: nestor vm start g" in missing.stderr
    assert BOOT_LINE in missing.stdout  # what it did print is shown first
    # The API (nestor's client and a plain request, each bounded well below a hang).
    run = Path(tempfile.mkdtemp(prefix="nt-log-", dir="/tmp"))
    daemon = Daemon(home, run / "api.sock")
    try:
        daemon.wait_ready()
        with Client(socket=daemon.socket) as api:
            assert BOOT_LINE.encode() in b"".join(api.vm_log("g", until=BOOT_LINE))
            with pytest.raises(StateError, match="is off and 'no-such-text' is not in its console output"):
                list(api.vm_log("g", until="no-such-text"))
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket)), base_url="http://nestor",
                          timeout=30) as http:
            answer = http.get("/v1/vms/g/log", params={"until": "no-such-text"})
            assert answer.status_code == 409 and answer.json()["error"]["kind"] == "wrong_state", answer.text
    finally:
        daemon.stop()
        shutil.rmtree(run, ignore_errors=True)
