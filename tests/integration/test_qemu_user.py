"""QEMU runs as nestor's unprivileged QEMU user (issue 8, section 2): a real VM on a real tap.

What is checked on the running QEMU, from /proc and the kernel, not from nestor's own records:
its uids and gids are the QEMU user's, it has no capabilities, its tap belongs to that user,
and a compromised QEMU (played through QMP `blockdev-add`, which opens a file by path inside
QEMU) cannot open nestor's database. Save and restore (fds passed over QMP) still work.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestor import paths
from nestor.engine import process, runas
from nestor.engine.qmp import Monitor
from nestor.errors import EngineError
from nestor.images.appliance import BOOT_LINE
from tests.helpers import nestor, reap_home, vm_dir, wait_for_text

pytestmark = pytest.mark.vm


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def ns(home: Path) -> Iterator[str]:
    name = f"nt-{secrets.token_hex(4)}"
    assert sh("ip", "netns", "add", name).returncode == 0
    try:
        yield name
    finally:
        reap_home(home)
        sh("ip", "netns", "del", name)


@pytest.fixture
def qemu_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(runas.USER)
    except KeyError:
        pytest.fail(f"the user {runas.USER} is missing: run scripts/setup (CI does)")


def status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def assert_unprivileged(pid: int, user: pwd.struct_passwd) -> None:
    st = status(pid)
    assert st["Uid"].split() == [str(user.pw_uid)] * 4, st["Uid"]  # real, effective, saved, fs
    assert st["Gid"].split() == [str(user.pw_gid)] * 4, st["Gid"]
    assert "0" not in st["Groups"].split(), st["Groups"]
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(st[cap], 16) == 0, f"{cap} = {st[cap]}"
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2"  # the sandbox is still in force
    assert Path(f"/proc/{pid}/fd").stat().st_uid == 0  # not dumpable: other QEMUs cannot ptrace it


def cannot_open_home(home: Path, directory: Path, name: str) -> str:
    """QEMU opens a file by path at run time as a guest escape would: it must be refused."""
    with Monitor(directory / paths.QMP_SOCK, name) as mon, pytest.raises(EngineError) as err:
        mon.execute("blockdev-add", {"driver": "file", "node-name": "probe",
                                     "filename": str(home / paths.DB_NAME), "read-only": True})
    assert "Permission denied" in err.value.message, err.value.message
    return err.value.message


def test_qemu_runs_as_the_qemu_user_without_capabilities(home: Path, ns: str, qemu_user: pwd.struct_passwd) -> None:
    nestor(home, "switch", "new", "sw", "--type", "private", netns=ns)
    nestor(home, "vm", "new", "u", "--memory", "128M", "--switch", "sw", netns=ns)
    nestor(home, "vm", "start", "u", netns=ns)
    directory = vm_dir(home, "u")
    pid = process.live_pid(directory)
    assert pid is not None
    launch = json.loads((directory / paths.LAUNCH).read_text())
    assert launch["argv"][launch["argv"].index("-runas" if "-runas" in launch["argv"] else "-run-with") + 1] \
        in (runas.USER, f"user={runas.USER}")
    # The console FIFO, QMP, the agent socket and the tap were all opened before QEMU dropped root.
    wait_for_text(directory / paths.SERIAL_LOG, BOOT_LINE)
    assert_unprivileged(pid, qemu_user)
    links = json.loads(sh("ip", "-n", ns, "-d", "-j", "link", "show", "type", "tun").stdout)
    taps = [link for link in links if link.get("linkinfo", {}).get("info_data", {}).get("type") == "tap"]
    assert len(taps) == 1, links
    data = taps[0]["linkinfo"]["info_data"]
    # Issue 18: the tap is root's, not the shared QEMU user's; QEMU got its descriptor instead.
    assert data.get("user") in (None, "root") and data.get("group") in (None, "root"), data
    tap = taps[0]["ifname"]
    fd = next(int(a.split("fd=")[1]) for a in launch["argv"] if a.startswith("tap,id=net0,fd="))
    assert Path(f"/proc/{pid}/fdinfo/{fd}").read_text().count(f"iff:\t{tap}") == 1
    assert not [a for a in launch["argv"] if "ifname=" in a]
    cannot_open_home(home, directory, "u")
    assert (home.stat().st_mode & 0o777) == 0o700 and home.stat().st_uid == 0  # the home stays root's alone

    # vm save / restore: the migration stream goes through a descriptor nestor opened (QMP getfd).
    nestor(home, "vm", "save", "u", netns=ns)
    assert process.live_pid(directory) is None
    saved = directory / paths.SAVED_STATE
    assert saved.stat().st_size > 1 << 20 and saved.stat().st_uid == 0 and saved.stat().st_mode & 0o777 == 0o600
    nestor(home, "vm", "start", "u", netns=ns)
    restored = process.live_pid(directory)
    assert restored is not None and restored != pid
    assert_unprivileged(restored, qemu_user)
    with Monitor(directory / paths.QMP_SOCK, "u") as mon:
        assert mon.status() == "running"
    nestor(home, "vm", "stop", "u", "--turn-off", netns=ns)
    assert process.live_pid(directory) is None
    assert json.loads(sh("ip", "-n", ns, "-j", "link", "show", "type", "tun").stdout or "[]") == []


def test_a_missing_qemu_user_fails_before_anything_is_made(home: Path, ns: str) -> None:
    nestor(home, "switch", "new", "sw", "--type", "private", netns=ns)
    nestor(home, "vm", "new", "m", "--memory", "128M", "--switch", "sw", netns=ns)
    directory = vm_dir(home, "m")
    before = sorted(p.name for p in directory.iterdir())
    result = subprocess.run(
        [*nestor_argv(home, ns), "vm", "start", "m"], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, runas.USER_ENV: "nestor-no-such-user"})
    assert result.returncode == 6, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and "nestor-no-such-user" in lines[0], lines
    assert lines[1].startswith("hint: ") and "Traceback" not in result.stderr
    assert process.live_pid(directory) is None
    assert sorted(p.name for p in directory.iterdir()) == before  # no launch.json, no sockets
    assert json.loads(sh("ip", "-n", ns, "-j", "link", "show", "type", "tun").stdout or "[]") == []


def nestor_argv(home: Path, ns: str) -> list[str]:
    return [sys.executable, "-m", "nestor", "--home", str(home), "--netns", ns]


def test_the_image_build_vm_drops_root_too(image_store: Path, tmp_path: Path, qemu_user: pwd.struct_passwd) -> None:
    """`image build debian`'s build VM (the argv it really uses), here booting the appliance
    kernel: its serial file was opened as root, the kernel writes to it after the drop."""
    from nestor.images import appliance, debian

    app = appliance.load_appliance(image_store)
    assert app is not None
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(1 << 20))
    log = tmp_path / "build-vm.log"
    argv = debian.build_vm_argv(disk, app.kernel.vmlinux, app.initrd, "0-0", log, runas.resolve())
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_text(log, "Linux version", timeout=120)
        st = status(proc.pid)
        assert st["Uid"].split() == [str(qemu_user.pw_uid)] * 4 and int(st["CapEff"], 16) == 0, st
    finally:
        proc.kill()
        proc.communicate(timeout=30)


def test_a_uefi_disk_image_vm_works_after_the_drop(image_store: Path, tmp_path: Path,
                                                  qemu_user: pwd.struct_passwd) -> None:
    """q35 + OVMF (its NVRAM), the root overlay on the cached image, a data disk and the cloud-init
    seed, all opened before the drop; then what QEMU does later on its own open files (online
    resize, a checkpoint with memory taken and applied) and through a passed fd (save/restore).
    None of it needs the guest to have booted, so it does not wait for it."""
    from nestor.images import debian
    from tests.helpers import guest_home

    debian.build_debian(image_store, debian.DebianRequest(), lambda line: None)  # cached
    home = guest_home(tmp_path / "home", image_store)
    try:
        nestor(home, "vm", "new", "g", "--image", "debian-bookworm", "--generation", "2", "--memory", "256M",
               "--no-ssh-key", timeout=300)
        nestor(home, "vm", "disk", "add", "g", "--name", "data", "--size", "64M")
        nestor(home, "vm", "start", "g")
        directory = vm_dir(home, "g")
        pid = process.live_pid(directory)
        assert pid is not None
        assert_unprivileged(pid, qemu_user)
        launch = json.loads((directory / paths.LAUNCH).read_text())["argv"]
        assert any("if=pflash" in arg and "nvram.fd" in arg for arg in launch)
        assert any("seed.iso" in arg for arg in launch)
        nestor(home, "vm", "disk", "resize", "g", "data", "--size", "128M")
        sizes = {d["name"]: d["virtual_size"] for d in json.loads(nestor(home, "vm", "disk", "list", "g", "-o",
                                                                        "json").stdout)}
        assert sizes["data"] == 128 << 20
        nestor(home, "vm", "checkpoint", "new", "g", "c1", timeout=600)
        listed = json.loads(nestor(home, "vm", "checkpoint", "list", "g", "-o", "json").stdout)
        assert [(c["name"], c["memory"]) for c in listed] == [("c1", True)]
        nestor(home, "vm", "checkpoint", "apply", "g", "c1", timeout=600)
        assert process.live_pid(directory) == pid
        nestor(home, "vm", "save", "g", timeout=300)
        nestor(home, "vm", "start", "g", timeout=300)
        restored = process.live_pid(directory)
        assert restored is not None and restored != pid
        assert_unprivileged(restored, qemu_user)
        with Monitor(directory / paths.QMP_SOCK, "g") as mon:
            assert mon.status() == "running"
        cannot_open_home(home, directory, "g")
    finally:
        reap_home(home)


def _set_data_file_bit(disk: Path, on: bool) -> None:
    """What an escaped QEMU can do through its read-write descriptor: flip the qcow2 header's
    'external data file' feature (qemu-img amend refuses to add one to an existing image)."""
    import struct

    from nestor.images import qcow2

    with disk.open("r+b") as f:
        f.seek(72)
        (features,) = struct.unpack(">Q", f.read(8))
        features = features | qcow2.INCOMPAT_DATA_FILE if on else features & ~qcow2.INCOMPAT_DATA_FILE
        f.seek(72)
        f.write(struct.pack(">Q", features))


def test_a_disk_header_rewritten_by_qemu_is_refused_before_root_opens_it(image_store: Path, tmp_path: Path,
                                                                          qemu_user: pwd.struct_passwd) -> None:
    """Issue 18: QEMU keeps read-write descriptors on its qcow2 files and may rewrite a header to
    name /etc/shadow as backing file or an external data file. The next `vm start`, and the
    root-side qemu-img of `vm disk resize`/`list` and `vm checkpoint`, refuse such a disk; a
    running VM's backings come from the command line, never from the header."""
    from nestor.images import qcow2
    from tests.helpers import guest_home

    home = guest_home(tmp_path / "home", image_store)
    tiny = tmp_path / "tiny.qcow2"
    assert sh("qemu-img", "create", "-q", "-f", "qcow2", str(tiny), "64M").returncode == 0
    try:
        nestor(home, "image", "import", str(tiny), "--name", "tiny", timeout=120)
        nestor(home, "vm", "new", "g", "--image", "tiny", "--memory", "128M", "--no-ssh-key", timeout=120)
        nestor(home, "vm", "disk", "add", "g", "--name", "data", "--size", "16M")
        directory = vm_dir(home, "g")
        root, data = directory / "root.qcow2", directory / "disk-data.qcow2"
        image = qcow2.read(root).backing
        assert image is not None and image.endswith("/tiny/disk.qcow2")

        nestor(home, "vm", "start", "g")
        pid = process.live_pid(directory)
        assert pid is not None
        assert_unprivileged(pid, qemu_user)
        drives = [a for a in json.loads((directory / paths.LAUNCH).read_text())["argv"] if a.startswith("id=disk-")]
        assert any(f"file={root}," in d and f"backing.file.filename={image},backing.read-only=on" in d for d in drives)
        assert any(f"file={data}," in d and d.endswith(",backing=") for d in drives), drives
        nestor(home, "vm", "stop", "g", "--turn-off")

        def refused(*argv: str, disk: str, why: str) -> None:
            result = nestor(home, *argv, check=False)
            lines = result.stderr.strip().splitlines()
            assert result.returncode != 0 and lines[0].startswith(f"error: vm 'g' disk '{disk}'"), result.stderr
            assert why in lines[0] and "is refused" in lines[0] and lines[-1].startswith("hint: "), result.stderr

        # the root overlay now names /etc/shadow as its backing file
        assert sh("qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", "/etc/shadow", str(root)).returncode == 0
        refused("vm", "start", "g", disk="root", why="/etc/shadow")
        assert process.live_pid(directory) is None  # no QEMU was started on it
        refused("vm", "disk", "resize", "g", "root", "--size", "128M", disk="root", why="/etc/shadow")
        refused("vm", "checkpoint", "new", "g", "c1", disk="root", why="/etc/shadow")
        refused("vm", "disk", "list", "g", disk="root", why="/etc/shadow")
        assert sh("qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", image, str(root)).returncode == 0

        # a data disk: a backing file, then an external data file
        assert sh("qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", "/dev/sda", str(data)).returncode == 0
        refused("vm", "start", "g", disk="data", why="/dev/sda")
        assert sh("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", "", str(data)).returncode == 0
        _set_data_file_bit(data, True)
        refused("vm", "start", "g", disk="data", why="external data file")
        refused("vm", "disk", "resize", "g", "data", "--size", "32M", disk="data", why="external data file")
        _set_data_file_bit(data, False)

        # as nestor wrote them again: everything works
        nestor(home, "vm", "disk", "resize", "g", "data", "--size", "32M")
        nestor(home, "vm", "start", "g")
        assert process.live_pid(directory) is not None
        nestor(home, "vm", "stop", "g", "--turn-off")
    finally:
        reap_home(home)
