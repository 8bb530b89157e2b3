"""nestor's own reading of a VM disk's qcow2 header (images/qcow2.py), on files qemu-img made,
and the argv that pins a disk's backing whatever its header says (issue 18: an escaped QEMU)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from nestor.engine import argv as qemu_argv
from nestor.errors import StateError
from nestor.images import qcow2

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img (qemu-utils)")


def qemu_img(*argv: str) -> None:
    subprocess.run(["qemu-img", *argv], check=True, capture_output=True, timeout=30)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "base.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(path), "64M")
    return path


@needs_qemu_img
def test_a_data_disk_and_an_overlay_as_nestor_writes_them(tmp_path: Path, base: Path) -> None:
    overlay = tmp_path / "root.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(overlay))
    assert qcow2.read(base) == qcow2.Header(version=3, backing=None, backing_format=None, data_file=None, incompatible=0)
    head = qcow2.read(overlay)
    assert (head.backing, head.backing_format) == (str(base), "qcow2")
    qcow2.check(base, None, "disk 'data'")
    qcow2.check(overlay, base, "disk 'root'")


@needs_qemu_img
def test_a_rewritten_backing_is_refused(tmp_path: Path, base: Path) -> None:
    overlay = tmp_path / "root.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(overlay))
    qemu_img("rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", "/etc/shadow", str(overlay))
    with pytest.raises(StateError) as err:
        qcow2.check(overlay, base, "vm 'g' disk 'root'")
    assert "'/etc/shadow'" in err.value.message and err.value.hint
    qemu_img("rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", "/dev/sda", str(base))  # a data disk gains one
    with pytest.raises(StateError, match="names a backing file '/dev/sda'"):
        qcow2.check(base, None, "vm 'g' disk 'data'")
    qemu_img("rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", str(base), str(overlay))  # right name, wrong format
    with pytest.raises(StateError, match="backing format 'raw', not qcow2"):
        qcow2.check(overlay, base, "root")


@needs_qemu_img
def test_an_external_data_file_is_refused(tmp_path: Path, base: Path) -> None:
    made = tmp_path / "made.qcow2"
    victim = tmp_path / "victim.raw"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={victim}", str(made), "1M")
    assert qcow2.read(made).data_file == str(victim)
    with pytest.raises(StateError, match="external data file"):
        qcow2.check(made, None, "disk")
    # what an escaped QEMU can do with its descriptor: set the feature bit in place
    with base.open("r+b") as f:
        f.seek(72)
        (features,) = struct.unpack(">Q", f.read(8))
        f.seek(72)
        f.write(struct.pack(">Q", features | qcow2.INCOMPAT_DATA_FILE))
    with pytest.raises(StateError, match="external data file"):
        qcow2.check(base, None, "disk")


def test_not_qcow2_symlinks_and_devices_are_refused(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.write_bytes(b"\0" * 4096)
    link = tmp_path / "link"
    link.symlink_to(raw)
    for path, why in ((raw, "not a qcow2"), (link, "refused"), (Path("/dev/null"), "regular"), (tmp_path / "gone", "refused")):
        with pytest.raises(StateError, match=why):
            qcow2.check(path, None, "disk")


def test_parse_refuses_names_outside_the_header() -> None:
    head = bytearray(qcow2.MAGIC + struct.pack(">IQI", 3, 200, 10) + b"\0" * 100)
    struct.pack_into(">I", head, 100, 104)
    with pytest.raises(qcow2.BadHeader, match="out of the header"):
        qcow2.parse(bytes(head))


def test_argv_pins_the_backing_of_disk_image_vms() -> None:
    spec = qemu_argv.Disk(Path("/h/vms/1/root.qcow2"), "qcow2", id="disk-root", pin_backing=True,
                          backing=Path("/h/images/store/tiny/disk.qcow2"))
    data = qemu_argv.Disk(Path("/h/vms/1/disk-data.qcow2"), "qcow2", id="disk-data", pin_backing=True)
    scratch = qemu_argv.Disk(Path("/h/vms/2/overlay.qcow2"), "qcow2")
    nested = qemu_argv.Disk(Path("/h/vms/3/overlay.qcow2"), "qcow2", pin_backing=True,
                            backing=Path("/h/images/nested-host/rootfs.raw"), backing_format="raw")
    assert qemu_argv._backing(spec) == (",backing.driver=qcow2,backing.file.driver=file,"
                                        "backing.file.filename=/h/images/store/tiny/disk.qcow2,backing.read-only=on,"
                                        "backing.backing=")
    assert qemu_argv._backing(data) == ",backing="
    assert qemu_argv._backing(scratch) == ""
    assert qemu_argv._backing(nested).startswith(",backing.driver=raw,") and "backing.backing" not in qemu_argv._backing(nested)
