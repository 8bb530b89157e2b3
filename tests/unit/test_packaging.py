"""The systemd unit that ships with nestor (packaging/nestor.service)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "nestor.service"


def test_unit_runs_the_daemon_and_leaves_vms_alone() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    assert service["ExecStart"].split()[1:] == ["serve"]
    assert service["KillMode"] == "process"  # stopping the daemon must not kill the VMs' QEMUs
    assert service["RuntimeDirectory"] == "nestor" and service["RuntimeDirectoryPreserve"] == "yes"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    nestor = Path(sys.executable).parent / "nestor"
    copy = tmp_path / "nestor.service"
    copy.write_text(UNIT.read_text().replace("/usr/local/bin/nestor", str(nestor)))
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
