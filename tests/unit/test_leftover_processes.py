"""The run's leftover-process check (tests/conftest.py) sees a real swtpm left working in a VM's
directory under the run's temporary directory (its command line names only relative paths), as
it sees a QEMU, and not once it is ended."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nestor.engine import swtpm
from tests.helpers import leftover_processes


@pytest.mark.skipif(shutil.which(swtpm.BINARY) is None, reason="swtpm is not installed (scripts/setup installs it)")
@pytest.mark.filterwarnings("ignore:subprocess [0-9]+ is still running:ResourceWarning")  # swtpm outlives start()
def test_a_left_swtpm_is_seen(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    base = str(tmp_path_factory.getbasetemp()) + "/"
    vm_dir = tmp_path / "vms" / "1"
    vm_dir.mkdir(parents=True)
    pid = swtpm.start(vm_dir, None)  # no QEMU connects: it runs until ended
    try:
        assert str(tmp_path) not in " ".join(Path(f"/proc/{pid}/cmdline").read_text().split("\0"))
        assert pid in leftover_processes(base)
        assert pid not in leftover_processes(str(tmp_path / "elsewhere") + "/")
    finally:
        swtpm.stop(vm_dir)
    assert pid not in leftover_processes(base)
    assert swtpm.live_pid(vm_dir) is None
