"""`nestor bugreport` and `nestor host check --tree` on a real VM: what is in the archive, and what is not."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from nestor import paths
from nestor.images.appliance import BOOT_LINE
from tests.helpers import nestor, vm_dir, wait_for_text

pytestmark = pytest.mark.vm

KEY_BODY = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"
SCRIPT = f"""#!/bin/sh
echo '-----BEGIN OPENSSH PRIVATE KEY-----'
echo '{KEY_BODY}'
echo '-----END OPENSSH PRIVATE KEY-----'
echo 'token=s3cr3t-from-the-guest'
echo report-guest-ready
"""


def test_bugreport_holds_the_levels_files_and_no_secrets(home: Path, tmp_path: Path) -> None:
    token = nestor(home, "token", "new", "ci").stdout.strip()
    run = tmp_path / "run.sh"
    run.write_text(SCRIPT)
    nestor(home, "vm", "new", "web", "--run", str(run), "--memory", "256M")
    nestor(home, "vm", "start", "web")
    wait_for_text(vm_dir(home, "web") / paths.SERIAL_LOG, "report-guest-ready")
    wait_for_text(vm_dir(home, "web") / paths.SERIAL_LOG, BOOT_LINE)

    archive = tmp_path / "report.tar.gz"
    out = json.loads(nestor(home, "bugreport", "--file", str(archive), "-o", "json").stdout)
    assert out["archive"] == str(archive) and out["levels"] == ["L0"]
    assert archive.stat().st_mode & 0o077 == 0  # logs are private
    with tarfile.open(archive) as tar:
        files = {m.name.split("/", 1)[1]: tar.extractfile(m).read().decode() for m in tar.getmembers()}  # type: ignore[union-attr]
    for name in ("versions.txt", "host-check.json", "cpu-flags.txt", "kvm-parameters.txt", "dmesg.txt",
                 "vms/web/argv.txt", "vms/web/serial.log", "vms/web/qemu.log"):
        assert f"L0/{name}" in files, sorted(files)
    assert files["L0/versions.txt"].startswith("nestor ") and "QEMU emulator version" in files["L0/versions.txt"]
    assert "qemu-system-x86_64" in files["L0/vms/web/argv.txt"]
    assert "report-guest-ready" in files["L0/vms/web/serial.log"]
    everything = "\n".join(files.values())
    for secret in (token, KEY_BODY, "s3cr3t-from-the-guest"):
        assert secret not in everything

    # An existing file is never overwritten.
    again = nestor(home, "bugreport", "--file", str(archive), check=False)
    assert again.returncode != 0 and again.stderr.startswith("error: ")

    tree = json.loads(nestor(home, "host", "check", "--tree", "-o", "json").stdout)
    assert {c["name"] for c in tree["checks"]} >= {"qemu", "accelerator"}
    assert tree["below"] == {}  # web runs no nestor of its own


def test_host_check_tree_makes_no_home(tmp_path: Path) -> None:
    home = tmp_path / "none"
    result = nestor(home, "host", "check", "--tree", "-o", "json", check=False)
    assert json.loads(result.stdout)["below"] == {}
    assert not home.exists()
