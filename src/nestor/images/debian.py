"""``nestor image build debian``: a bootable Debian disk image made from Debian packages only.

The steps (each shown as progress):

1. ``mmdebstrap`` a root tree: the cloud kernel, systemd, cloud-init, openssh-server,
   qemu-guest-agent, GRUB for BIOS and UEFI, and the packages asked for. Small files nestor
   writes (fstab, GRUB defaults, cloud-init datasource) go in with it.
2. A sparse raw disk with a GPT: a BIOS boot partition (GRUB's core.img for SeaBIOS), an EFI
   system partition (FAT32) and the root partition, filled with ``mkfs.ext4 -d`` at the root
   partition's offset. No loop device and no mount: loop partitions do not appear in this
   kind of container, and nothing here needs them.
3. A build VM (QEMU, direct kernel boot of the image's own kernel and initramfs) boots the disk
   with ``init=`` a short script that runs Debian's own ``grub-install --target=i386-pc`` and
   ``grub-install --target=x86_64-efi --removable`` and ``update-grub`` against ``/dev/vda`` -
   the installer's way of doing it, on the real disk, as debos/fakemachine do.
4. ``qemu-img convert`` to qcow2 into the image store (:mod:`nestor.images.store`).

The image is cached by its inputs (release, packages, size, nestor's files): the same request
finds it in the store and returns at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from nestor.engine import runas
from nestor.engine.runas import QemuUser
from nestor.errors import ImageError, InvalidInput

from . import publish, store
from .ext4 import tree_size
from .packages import APT_OPTIONS, DPKG_OPTIONS, run_mmdebstrap
from .steps import Progress, Steps

FORMAT = 2  # 2: FAT32 ESP with 1-sector clusters (OVMF reads it)
RELEASES = ("bookworm",)  # the releases this build is tested with
DEFAULT_RELEASE = "bookworm"
DEFAULT_SIZE = 8 << 30
MIN_SIZE = 2 << 30
MAX_SIZE = 2 << 40

BASE_PACKAGES: tuple[str, ...] = (
    "linux-image-cloud-amd64", "initramfs-tools", "systemd-sysv", "systemd-resolved", "udev", "dbus",
    "cloud-init", "cloud-guest-utils", "openssh-server", "qemu-guest-agent", "sudo", "netbase",
    "iproute2", "e2fsprogs", "fdisk", "grub2-common", "grub-pc-bin", "grub-efi-amd64-bin",
    # UEFI secure boot: Microsoft-signed shim, Debian-signed GRUB (grub-install picks them up).
    "shim-signed", "grub-efi-amd64-signed",
)
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")

# Disk layout, in 512-byte sectors (1 MiB aligned).
SECTOR = 512
BIOS_START, BIOS_SECTORS = 2048, 2048  # 1 MiB BIOS boot partition (GRUB core.img)
ESP_START, ESP_SECTORS = 4096, 129024  # 63 MiB EFI system partition
ROOT_START = ESP_START + ESP_SECTORS  # 66 MiB: root to the end
ROOT_LABEL = "nestor-root"
ESP_MKFS = ("-F", "32", "-s", "1")
ESP_LABEL = "EFI"

BUILD_BOOT_LINE = "nestor-build: grub installed"
BUILD_INIT = "usr/local/sbin/nestor-build-grub"
_TIMEOUT_BUILD_VM = 900
_TIMEOUT_TOOL = 600

# The guest's kernel command line: the serial console shows the boot (`nestor vm log`).
KERNEL_CMDLINE = "console=tty0 console=ttyS0,115200n8"
GRUB_DEFAULTS = f"""\
# nestor: the serial console first, no menu delay.
GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="{KERNEL_CMDLINE}"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
"""
# Only NoCloud (nestor's seed) and None: no minutes of probing for clouds that are not there.
CLOUD_CFG = """\
# nestor: the seed is a NoCloud medium (label cidata) made at `nestor vm start`.
datasource_list: [NoCloud, None]
# No `locales` package in the image: leave the locale alone (update-locale would fail).
locale: false
"""
# systemd-networkd-wait-online waits for every link, for 2 minutes, and cloud-init waits for it:
# a VM without an adapter (or with one cable left unplugged) would stall its boot that long.
WAIT_ONLINE = """\
# nestor: one configured link is enough; do not stall the boot when there is none.
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=20
"""
BUILD_SCRIPT = f"""\
#!/bin/sh
# nestor build VM: install GRUB for BIOS and UEFI onto /dev/vda, then power off.
set -eu
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sys /sys
mountpoint -q /dev || mount -t devtmpfs dev /dev
mountpoint -q /run || mount -t tmpfs run /run
mount -o remount,rw /
mount /boot/efi
grub-install --target=i386-pc /dev/vda
grub-install --target=x86_64-efi --efi-directory=/boot/efi --removable --no-nvram
# Also EFI/debian: the signed GRUB that shim starts from EFI/BOOT reads its grub.cfg stub there.
grub-install --target=x86_64-efi --efi-directory=/boot/efi --bootloader-id=debian --no-nvram
update-grub
rm -f /{BUILD_INIT}
umount /boot/efi
sync
echo "{BUILD_BOOT_LINE}" > /dev/console
echo u > /proc/sysrq-trigger
echo o > /proc/sysrq-trigger
while :; do :; done  # builtins only: no disk reads while the power goes
"""


@dataclass(frozen=True)
class DebianRequest:
    release: str = DEFAULT_RELEASE
    packages: tuple[str, ...] = ()
    size: int = DEFAULT_SIZE
    name: str | None = None

    @property
    def image_name(self) -> str:
        return self.name or f"debian-{self.release}"


def validate(request: DebianRequest) -> DebianRequest:
    """Check the user's request (release, package names, size, name); normalise the packages."""
    if request.release not in RELEASES:
        raise InvalidInput(f"unknown Debian release '{request.release}'", hint=f"use one of {', '.join(RELEASES)}")
    for package in request.packages:
        if not _PACKAGE_RE.match(package):
            raise InvalidInput(f"invalid Debian package name '{package}'",
                               hint="comma-separated package names such as vim,curl")
    if request.size < MIN_SIZE:
        raise InvalidInput(f"image size {request.size >> 20}M is too small (at least {MIN_SIZE >> 30}G)",
                           hint="e.g. --size 8G")
    if request.size > MAX_SIZE:
        raise InvalidInput(f"image size {request.size >> 30}G is too large (at most {MAX_SIZE >> 40}T)",
                           hint="e.g. --size 8G")
    store.validate_image_name(request.image_name)
    packages = tuple(sorted(set(request.packages) - set(BASE_PACKAGES)))
    return DebianRequest(request.release, packages, request.size, request.name)


def packages(request: DebianRequest) -> list[str]:
    return [*BASE_PACKAGES, *request.packages]


def inputs(request: DebianRequest) -> dict[str, object]:
    """Everything the image is made of; a change here means a rebuild."""
    return {
        "format": FORMAT,
        "release": request.release,
        "packages": sorted(packages(request)),
        "size": request.size,
        "apt_options": list(APT_OPTIONS),
        "dpkg_options": list(DPKG_OPTIONS),
        "files": guest_files(),
        "fstab": fstab("ROOT-UUID", "ESPID000"),  # the per-build UUIDs left out
        "hooks": customize_hooks(),
        "build_script": BUILD_SCRIPT,
        "layout": [BIOS_START, BIOS_SECTORS, ESP_START, ESP_SECTORS],
        "esp_mkfs": ESP_MKFS,
    }


def inputs_hash(request: DebianRequest) -> str:
    return hashlib.sha256(json.dumps(inputs(request), sort_keys=True).encode()).hexdigest()


def guest_files() -> dict[str, str]:
    """Files nestor writes into the tree (fstab is made per build: it names the UUIDs)."""
    return {
        "etc/default/grub.d/50-nestor.cfg": GRUB_DEFAULTS,
        "etc/cloud/cloud.cfg.d/90-nestor.cfg": CLOUD_CFG,
        "etc/systemd/system/systemd-networkd-wait-online.service.d/50-nestor.conf": WAIT_ONLINE,
        "etc/hostname": "debian\n",
        BUILD_INIT: BUILD_SCRIPT,
    }


def customize_hooks() -> list[str]:
    """mmdebstrap --customize-hook commands (constants; no user input reaches them)."""
    return [
        'chroot "$1" systemctl enable systemd-networkd.service',
        # Every VM makes its own host keys (cloud-init's ssh module at first boot).
        'rm -f "$1"/etc/ssh/ssh_host_*',
        # The machine id is made at first boot, per VM.
        ': > "$1"/etc/machine-id',
        'rm -f "$1"/var/lib/dbus/machine-id',
    ]


def mmdebstrap_argv(request: DebianRequest, target: Path) -> list[str]:
    return [
        "mmdebstrap", "--mode=root", "--variant=apt",
        *(f"--aptopt={opt}" for opt in APT_OPTIONS),
        *(f"--dpkgopt={opt}" for opt in DPKG_OPTIONS),
        f"--include={','.join(packages(request))}",
        *(f"--customize-hook={hook}" for hook in customize_hooks()),
        request.release, str(target),
    ]


def partition_argv(disk: Path, size: int) -> list[str]:
    """sgdisk: BIOS boot (EF02), ESP (EF00), root (8304, Linux x86-64 root) to the end."""
    return [
        "sgdisk", "--clear",
        f"--new=1:{BIOS_START}:{BIOS_START + BIOS_SECTORS - 1}", "--typecode=1:EF02", "--change-name=1:bios",
        f"--new=2:{ESP_START}:{ESP_START + ESP_SECTORS - 1}", "--typecode=2:EF00", "--change-name=2:esp",
        f"--new=3:{ROOT_START}:{root_end(size)}", "--typecode=3:8304", "--change-name=3:root",
        str(disk),
    ]


def root_end(size: int) -> int:
    """The root partition's last sector: 1 MiB aligned, clear of the backup GPT (33 sectors)."""
    return ((size // SECTOR - 34) // 2048) * 2048 - 1


def fstab(root_uuid: str, esp_id: str) -> str:
    # The ESP is nofail: under a loaded TCG host udev may announce it after systemd's 90 s device
    # timeout, and a required /boot/efi then sends the whole boot to emergency mode (seen).
    return (f"UUID={root_uuid}\t/\text4\terrors=remount-ro\t0\t1\n"
            f"UUID={esp_id[:4]}-{esp_id[4:]}\t/boot/efi\tvfat\tumask=0077,nofail,x-systemd.device-timeout=600s\t0\t1\n")


def build_debian(images_dir: Path, request: DebianRequest, progress: Progress, force: bool = False,
                 in_use: bool = False) -> store.StoredImage:
    """Build (or find cached) the Debian image of ``request`` in the store.

    ``in_use``: VMs have disks on the stored image of that name; it is then never replaced.
    """
    request = validate(request)
    name = request.image_name
    digest = inputs_hash(request)
    current = store.find(images_dir, name)
    if current is not None and not force and current.inputs == digest:
        progress(f"{name}: cached ({current.path}, {store.describe(current.path)})")
        return current
    if current is not None and in_use:
        raise ImageError(f"image '{name}' is used by VMs and would change",
                         hint="give the new build another name with --name, or remove those VMs")
    if current is not None and current.source != "debian":
        raise ImageError(f"image '{name}' exists and was not built here ({current.source})",
                         hint="choose another --name, or nestor image remove it first")
    if os.geteuid() != 0:
        raise ImageError("building a Debian image needs root (mmdebstrap --mode=root)",
                         hint="run `nestor image build debian` as root")
    user = runas.resolve()  # the build VM's QEMU drops root too: a missing user fails before mmdebstrap
    started = time.monotonic()
    step = Steps(progress, started)
    log = images_dir / f"{name}.log"
    with publish.Staging(images_dir, name) as stage:
        tree = stage / "root"
        step(f"[1/5] mmdebstrap {request.release} ({len(packages(request))} packages, no recommends)")
        run_mmdebstrap(tree, log, step.sub, argv=mmdebstrap_argv(request, tree), what=f"image {name}")
        root_uuid, esp_id = str(uuid.uuid4()), uuid.uuid4().hex[:8].upper()
        configure_tree(tree, root_uuid, esp_id)
        used = tree_size(tree)
        step(f"[2/5] disk {request.size >> 20} MiB: GPT (BIOS boot, ESP, root), mkfs ({used / 1e6:.0f} MB)")
        kernel, initrd = boot_files(tree)
        shutil.copy2(kernel, stage / "vmlinuz")
        shutil.copy2(initrd, stage / "initrd.img")
        raw = stage / "disk.raw"
        make_disk(tree, raw, request.size, root_uuid, esp_id)
        shutil.rmtree(tree)
        step("[3/5] build VM: grub-install (BIOS and UEFI), update-grub")
        run_build_vm(raw, stage / "vmlinuz", stage / "initrd.img", root_uuid, images_dir / f"{name}.build-vm.log",
                     step.sub, user)
        step("[4/5] qemu-img convert to qcow2")
        out = stage / "out"
        out.mkdir()
        convert(raw, out / store.DISK)
        raw.unlink()
        step("[5/5] publishing")
        store.publish_image(images_dir, name, out, {
            "source": "debian", "inputs": digest, "release": request.release,
            "packages": list(request.packages), "size_bytes": request.size,
        })
    image = store.get(images_dir, name)
    progress(f"{name}: done in {time.monotonic() - started:.1f} s ({image.path}, {store.describe(image.path)})")
    return image


def configure_tree(tree: Path, root_uuid: str, esp_id: str) -> None:
    for rel, text in guest_files().items():
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755 if rel == BUILD_INIT else 0o644)
    (tree / "etc" / "fstab").write_text(fstab(root_uuid, esp_id))
    (tree / "boot" / "efi").mkdir(parents=True, exist_ok=True)
    for leftover in ("var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin"):
        (tree / leftover).unlink(missing_ok=True)


def boot_files(tree: Path) -> tuple[Path, Path]:
    """The image's own kernel and initramfs (for the build VM)."""
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    initrds = sorted((tree / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise ImageError("Debian image: the tree has no /boot/vmlinuz-* or initrd.img-*",
                         hint="linux-image-cloud-amd64 and initramfs-tools must install")
    return kernels[-1], initrds[-1]


def make_disk(tree: Path, disk: Path, size: int, root_uuid: str, esp_id: str) -> None:
    """The raw disk: GPT, an empty FAT32 ESP, and ext4 root made from ``tree`` (no mounts)."""
    disk.unlink(missing_ok=True)
    with disk.open("wb") as sink:
        sink.truncate(size)
    _run(partition_argv(disk, size), "sgdisk", "apt-get install gdisk")
    # FAT32 with 1-sector clusters: 63 MiB then has ~128k clusters. mkfs.fat's default (8 sectors)
    # gives 16k, too few for FAT32: Linux mounts it, but OVMF judges the type by the cluster count
    # (FAT16) and finds no EFI/BOOT/BOOTX64.EFI.
    _run(["mkfs.fat", *ESP_MKFS, "-n", ESP_LABEL, "-i", esp_id, f"--offset={ESP_START}",
          str(disk), str(ESP_SECTORS * SECTOR // 1024)], "mkfs.fat", "apt-get install dosfstools")
    root_kib = (root_end(size) - ROOT_START + 1) * SECTOR // 1024
    _run(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-U", root_uuid, "-m", "1",
          "-E", f"offset={ROOT_START * SECTOR}", "-d", str(tree), str(disk), f"{root_kib}k"],
         "mkfs.ext4", "e2fsprogs >= 1.43 is needed for mkfs.ext4 -d")


def build_vm_argv(disk: Path, kernel: Path, initrd: Path, root_uuid: str, log: Path,
                  user: QemuUser | None = None) -> list[str]:
    """The build VM: everything is opened at start, so it can drop root to `user` like VMs do."""
    return [
        "qemu-system-x86_64", "-name", "nestor-build", "-nodefaults", "-no-user-config", "-display", "none",
        "-M", "q35", "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "1024M",
        "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", f"root=UUID={root_uuid} ro console=ttyS0,115200n8 init=/{BUILD_INIT} panic=-1",
        "-drive", f"id=disk0,file={disk},format=raw,if=none,cache=unsafe",
        "-device", "virtio-blk-pci,drive=disk0",
        "-serial", f"file:{log}", "-no-reboot",
        *(user.argv() if user is not None else []),
    ]


def run_build_vm(disk: Path, kernel: Path, initrd: Path, root_uuid: str, log: Path, progress: Progress,
                 user: QemuUser | None = None) -> None:
    argv = build_vm_argv(disk, kernel, initrd, root_uuid, log, user)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    except FileNotFoundError as exc:
        raise ImageError("qemu-system-x86_64 is not installed", hint="apt-get install qemu-system-x86") from exc
    try:
        _, err = proc.communicate(timeout=_TIMEOUT_BUILD_VM)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.communicate()
        raise ImageError(f"Debian image: the build VM did not finish in {_TIMEOUT_BUILD_VM} s",
                         hint=f"its console is in {log}") from exc
    text = log.read_text(errors="replace") if log.exists() else ""
    if BUILD_BOOT_LINE not in text:
        tail = [line for line in text.splitlines() if line.strip()][-3:]
        raise ImageError(f"Debian image: grub-install in the build VM failed: {' | '.join(tail) or err.strip()}",
                         hint=f"the build VM's console is in {log}")
    progress(f"build VM done in {time.monotonic() - started:.1f} s")


def convert(raw: Path, qcow2: Path) -> None:
    from ..engine import qemu_img

    qemu_img.run(["convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], "Debian image: qemu-img convert",
                 timeout=_TIMEOUT_TOOL, error=ImageError)


def _run(argv: list[str], what: str, hint: str) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_TOOL, check=False)
    except FileNotFoundError as exc:
        raise ImageError(f"{argv[0]} is not installed", hint=hint) from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageError(f"Debian image: {what} timed out after {_TIMEOUT_TOOL} s") from exc
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise ImageError(f"Debian image: {what} failed: {detail[-1] if detail else proc.returncode}", hint=hint)
