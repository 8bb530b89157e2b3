"""Every qemu-img goes through engine/qemu_img.run: under resource limits, unprivileged where it can
(issue 18: qemu-img parses untrusted images, the class of CVE-2024-4467)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nestor.engine import qemu_img, runas
from nestor.errors import EngineError, InvalidInput

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None or shutil.which("prlimit") is None,
                                    reason="needs qemu-img and prlimit")


def test_limits_prefix() -> None:
    assert qemu_img.limits(60) == ["prlimit", f"--as={qemu_img.MAX_AS}", "--cpu=61:66", "--core=0",
                                   f"--nofile={qemu_img.MAX_FILES}", "--"]


@needs_qemu_img
def test_runs_under_the_address_space_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = tmp_path / "d.qcow2"
    qemu_img.run(["create", "-q", "-f", "qcow2", str(disk), "16M"], "create")
    assert '"format": "qcow2"' in qemu_img.run(["info", "--output=json", str(disk)], "info")
    monkeypatch.setattr(qemu_img, "MAX_AS", 8 << 20)  # too little for qemu-img to even load
    with pytest.raises(EngineError, match="^info: "):
        qemu_img.run(["info", "--output=json", str(disk)], "info")


@needs_qemu_img
def test_a_failure_is_the_refused_error_with_the_last_stderr_line(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("")
    with pytest.raises(InvalidInput) as err:
        qemu_img.run(["info", "-f", "qcow2", str(tmp_path / "t.txt")], "not an image", refused=InvalidInput, hint="h")
    assert err.value.message.startswith("not an image: ") and err.value.hint == "h"


def qemu_user() -> runas.QemuUser | None:
    return qemu_img.unprivileged() if os.geteuid() == 0 else None


@needs_qemu_img
@pytest.mark.skipif(qemu_user() is None, reason="needs root and the nestor-qemu user (scripts/setup)")
def test_as_user_really_is_the_qemu_user(tmp_path: Path) -> None:
    user = qemu_user()
    assert user is not None
    public = Path("/tmp") / f"nestor-qemu-img-{os.getpid()}"
    public.mkdir(mode=0o755)
    try:
        disk = public / "d.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True, timeout=30)
        disk.chmod(0o644)
        assert qemu_img.readable_by(user, disk)
        qemu_img.run(["info", str(disk)], "info", as_user=True)
        disk.chmod(0o600)  # root's alone, as nestor's VM disks are
        assert not qemu_img.readable_by(user, disk)
        with pytest.raises(EngineError, match="Permission denied"):
            qemu_img.run(["info", str(disk)], "info", as_user=True)
        qemu_img.run(["info", str(disk)], "info")  # root may
        disk.chmod(0o644)
        private = tmp_path / "home"  # a root-only directory on the way, as a nestor home is
        private.mkdir(mode=0o700)
        (private / "link.qcow2").symlink_to(disk)
        assert qemu_img.readable_by(user, disk) and not qemu_img.readable_by(user, private / "link.qcow2")
    finally:
        shutil.rmtree(public)
    assert not qemu_img.readable_by(user, tmp_path / "missing")


def test_no_qemu_img_outside_the_helper() -> None:
    """One place runs qemu-img: no other module names it as a program to run."""
    src = Path(__file__).parents[2] / "src" / "nestor"
    offenders = [str(p.relative_to(src)) for p in src.rglob("*.py") if p.name != "qemu_img.py"
                 and ('["qemu-img"' in p.read_text() or "'qemu-img'," in p.read_text())]
    assert offenders == []
