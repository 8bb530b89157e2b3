"""Bad input for every disk-image guest option: one `error:` line, a `hint:`, a non-zero exit,
and nothing changed (no VM, no image, no file). Real CLI, real qemu-img; no VM boots."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import guest_home, nestor, reap_home

pytestmark = pytest.mark.vm


@pytest.fixture
def ghome(image_store: Path, tmp_path: Path) -> Iterator[Path]:
    """A home of its own image store with a small imported image 'tiny' (raw, 16M)."""
    home = guest_home(tmp_path / "home", image_store)
    raw = tmp_path / "tiny.raw"
    with raw.open("wb") as f:
        f.truncate(16 << 20)
    nestor(home, "image", "import", str(raw), "--name", "tiny", "--format", "raw")
    try:
        yield home
    finally:
        reap_home(home)


def refused(home: Path, *args: str, code: int | None = None, text: str | None = None) -> str:
    before = _state(home)
    result = nestor(home, *args, check=False)
    assert result.returncode != 0, result.stdout
    if code is not None:
        assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and len(lines) == 2 and lines[1].startswith("hint: "), result.stderr
    if text is not None:
        assert text in lines[0], lines[0]
    assert _state(home) == before, "something changed"
    return lines[0]


def _state(home: Path) -> tuple[object, ...]:
    """Every row and file a guest command could change (read directly: faster than the CLI)."""
    conn = sqlite3.connect(home / "nestor.db")
    rows = tuple(sorted(map(tuple, conn.execute(f"SELECT * FROM {table}").fetchall()))
                 for table in ("vms", "vm_guests", "vm_disks", "adapter_addresses"))
    conn.close()
    tree = [p for top in ("vms", "images/store") if (home / top).exists() for p in (home / top).rglob("*")]
    files = sorted((str(p.relative_to(home)), p.stat().st_size if p.is_file() else 0)
                   for p in tree if p.name != "lock")
    return (rows, files)


def test_vm_new_bad_guest_flags(ghome: Path, tmp_path: Path) -> None:
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    userdata = tmp_path / "ud.yaml"
    userdata.write_text("users: []\n")
    new = ("vm", "new", "x", "--image", "tiny", "--ssh-key", f"{key}.pub")
    refused(ghome, *new, "--generation", "3", code=2, text="generation 3")
    refused(ghome, *new, "--secure-boot", code=2, text="--generation 2")
    refused(ghome, "vm", "new", "x", "--image", "nosuch", code=3, text="image 'nosuch' not found")
    refused(ghome, *new, "--disk-size", "8M", code=2, text="smaller than the image")
    refused(ghome, *new, "--disk-size", "lots", code=2)
    refused(ghome, *new, "--disk-size", "17T", code=2)
    refused(ghome, *new, "--user", "Root!", code=2, text="invalid user name")
    refused(ghome, *new, "--user", "root", code=2)
    refused(ghome, *new, "--hostname", "-bad-", code=2, text="invalid hostname")
    refused(ghome, "vm", "new", "x", "--image", "tiny", "--ssh-key", str(tmp_path / "none.pub"), code=3)
    refused(ghome, "vm", "new", "x", "--image", "tiny", "--ssh-key", str(key), code=2, text="private key")
    refused(ghome, "vm", "new", "x", "--image", "tiny", "--cloud-init", str(userdata), code=2, text="#cloud-config")
    refused(ghome, "vm", "new", "x", "--image", "tiny", "--cloud-init", str(tmp_path / "nope"), code=3)
    userdata.write_text("#cloud-config\n")
    refused(ghome, *new, "--cloud-init", str(userdata), code=2, text="excludes")
    refused(ghome, "vm", "new", "x", "--iso", str(tmp_path / "missing.iso"), code=3)
    refused(ghome, *new, "--kernel", str(key), code=2)
    refused(ghome, "vm", "new", "Bad_Name", "--image", "tiny", code=2)
    # Issue 18: empty names, a trailing newline, files read whole, a file that is not an ISO, links.
    refused(ghome, *new, "--hostname", "", code=2, text="invalid hostname")
    refused(ghome, *new, "--hostname", "web\n", code=2, text="invalid hostname")
    refused(ghome, *new, "--user", "", code=2, text="invalid user name")
    refused(ghome, *new, "--user", "alice\n", code=2, text="invalid user name")
    refused(ghome, "vm", "new", "x", "--image", "tiny", "--ssh-key", "/dev/zero", code=2, text="not a regular file")
    refused(ghome, "vm", "new", "x", "--image", "tiny", "--cloud-init", "/dev/zero", code=2, text="not a regular file")
    huge_key = tmp_path / "huge.pub"
    with huge_key.open("wb") as f:
        f.truncate(1 << 30)
    refused(ghome, "vm", "new", "x", "--image", "tiny", "--ssh-key", str(huge_key), code=2, text="larger than")
    (tmp_path / "link.pub").symlink_to(f"{key}.pub")
    refused(ghome, "vm", "new", "x", "--image", "tiny", "--ssh-key", str(tmp_path / "link.pub"), code=2, text="symbolic link")
    not_iso = tmp_path / "notes.iso"
    not_iso.write_bytes(b"x" * 40000)
    refused(ghome, "vm", "new", "x", "--iso", str(not_iso), code=2, text="not an ISO image")
    (tmp_path / "a,b.iso").write_bytes(b"x")
    refused(ghome, "vm", "new", "x", "--iso", str(tmp_path / "a,b.iso"), code=2, text="','")


def test_adapter_disk_checkpoint_bad_input(ghome: Path, tmp_path: Path) -> None:
    nestor(ghome, "vm", "new", "g", "--image", "tiny", "--no-ssh-key")
    refused(ghome, "adapter", "set", "g", "--ip", "10.0.0.5/24", code=3)  # no adapter
    refused(ghome, "adapter", "set", "g", code=2, text="nothing to set")
    refused(ghome, "adapter", "set", "g", "--dhcp", "--ip", "10.0.0.5/24", code=2)
    refused(ghome, "vm", "disk", "add", "g", "--name", "d", "--size", "0", code=2)
    refused(ghome, "vm", "disk", "add", "g", "--name", "Bad!", "--size", "1G", code=2)
    refused(ghome, "vm", "disk", "add", "g", "--name", "root", "--size", "1G", code=4)
    refused(ghome, "vm", "disk", "resize", "g", "root", "--size", "8M", code=2, text="only grow")
    refused(ghome, "vm", "disk", "resize", "g", "nosuch", "--size", "1G", code=3)
    refused(ghome, "vm", "disk", "remove", "g", "root", code=2)
    refused(ghome, "vm", "checkpoint", "apply", "g", "nosuch", code=3)
    refused(ghome, "vm", "checkpoint", "new", "g", "Bad Name", code=2)
    refused(ghome, "vm", "checkpoint", "remove", "g", "nosuch", code=3)
    refused(ghome, "image", "remove", "tiny", code=4, text="used by vm 'g'")
    nestor(ghome, "vm", "new", "plain")  # an appliance VM: no qcow2 disks
    refused(ghome, "vm", "disk", "list", "plain", code=2)
    refused(ghome, "vm", "checkpoint", "list", "plain", code=2)
    refused(ghome, "adapter", "set", "plain", "--ip", "10.0.0.5/24", code=2)


def test_checkpoint_off_roundtrip(ghome: Path) -> None:
    """A stopped VM's checkpoints (qemu-img snapshot), and a disk added and removed."""
    nestor(ghome, "vm", "new", "g", "--image", "tiny", "--no-ssh-key")
    nestor(ghome, "vm", "disk", "add", "g", "--name", "data", "--size", "32M")
    nestor(ghome, "vm", "checkpoint", "new", "g", "c0")
    rows = json.loads(nestor(ghome, "vm", "checkpoint", "list", "g", "-o", "json").stdout)
    assert [(r["name"], r["memory"]) for r in rows] == [("c0", False)]
    refused(ghome, "vm", "checkpoint", "new", "g", "c0", code=4)
    nestor(ghome, "vm", "checkpoint", "apply", "g", "c0")
    nestor(ghome, "vm", "checkpoint", "remove", "g", "c0")
    nestor(ghome, "vm", "disk", "remove", "g", "data")
    assert [d["name"] for d in json.loads(nestor(ghome, "vm", "disk", "list", "g", "-o", "json").stdout)] == ["root"]


def test_image_bad_input(ghome: Path, tmp_path: Path) -> None:
    refused(ghome, "image", "import", str(tmp_path / "missing.qcow2"), code=3)
    refused(ghome, "image", "import", str(tmp_path), code=2, text="not a regular file")
    vmdk = tmp_path / "x.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(vmdk), "16M"], check=True)
    refused(ghome, "image", "import", str(vmdk), code=2, text="not qcow2 or raw")
    empty = tmp_path / "empty.raw"
    empty.write_bytes(b"")
    refused(ghome, "image", "import", str(empty), "--format", "raw", code=2, text="virtual size is 0")
    # Issue 18: a text file was imported as a raw disk; a link to /etc/shadow was imported; a virtual
    # size beyond the free space was accepted.
    text = tmp_path / "notes.txt"
    text.write_text("not a disk\n" * 100)
    refused(ghome, "image", "import", str(text), code=2, text="no image format")
    link = tmp_path / "shadow.raw"
    link.symlink_to("/etc/shadow")
    refused(ghome, "image", "import", str(link), "--format", "raw", code=2, text="symbolic link")
    big = tmp_path / "big.qcow2"
    free = shutil.disk_usage(ghome).free
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(big), str(free + (1 << 40))], check=True)
    refused(ghome, "image", "import", str(big), code=2, text="GiB free")
    huge = tmp_path / "huge.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(huge), "17T"], check=True)
    refused(ghome, "image", "import", str(huge), code=2, text="absurd")
    datafile = tmp_path / "ext.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'ext.data'}",
                    str(datafile), "16M"], check=True)
    refused(ghome, "image", "import", str(datafile), code=2, text="external data file")
    refused(ghome, "image", "import", str(empty), "--name", "appliance", code=2, text="reserved")
    refused(ghome, "image", "import", str(vmdk), "--name", "tiny", code=4)
    refused(ghome, "image", "remove", "nosuch", code=3)
    refused(ghome, "image", "build", "debian", "--release", "nosuch", code=2, text="unknown Debian release")
    refused(ghome, "image", "build", "debian", "--packages", "vim;rm", code=2, text="invalid Debian package")
    refused(ghome, "image", "build", "debian", "--size", "1G", code=2, text="too small")
    refused(ghome, "image", "build", "appliance", "--release", "bookworm", code=2)


def test_debian_disk_layout_is_real(tmp_path: Path) -> None:
    """make_disk with the real tools (sgdisk, mkfs.fat, mkfs.ext4 -d), no VM: the GPT has the BIOS
    boot, ESP and root partitions, and the ESP is a FAT32 that firmware accepts (>= 65525
    clusters; OVMF judges the FAT type by the cluster count)."""
    import struct
    import uuid

    from nestor.images import debian

    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("x\n")
    disk = tmp_path / "disk.raw"
    root_uuid = str(uuid.uuid4())
    debian.make_disk(tree, disk, 2 << 30, root_uuid, "ABCD1234")
    table = subprocess.run(["sgdisk", "-p", str(disk)], capture_output=True, text=True, check=True).stdout
    assert " EF02 " in table and " EF00 " in table and " 8304 " in table
    with disk.open("rb") as f:
        f.seek(debian.ESP_START * debian.SECTOR)
        boot = f.read(512)
    bytes_per_sector, spc, reserved, fats = struct.unpack_from("<HBHB", boot, 11)
    total = struct.unpack_from("<I", boot, 32)[0]
    fat_size = struct.unpack_from("<I", boot, 36)[0]
    clusters = (total - reserved - fats * fat_size) // spc
    assert bytes_per_sector == 512 and boot[82:90] == b"FAT32   " and clusters >= 65525, (spc, clusters)
    blkid = subprocess.run(["blkid", "-p", "-O", str(debian.ROOT_START * debian.SECTOR), str(disk)],
                           capture_output=True, text=True, check=False).stdout
    assert root_uuid in blkid and 'TYPE="ext4"' in blkid
