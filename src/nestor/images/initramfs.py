"""The appliance image: the kernel plus a small busybox initramfs.

``build_appliance`` packs busybox (static), the init script ``appliance_init.sh`` with the shared
``guest_lib.sh`` and the contract (``contract.sh``), and the kernel modules an appliance needs
into an uncompressed newc cpio. ``make_run_cpio`` makes the per-VM cpio carrying the user's script
as ``/nestor/run.sh``; it is concatenated after the appliance initrd.

Layout under ``images_dir``: ``appliance/manifest.json  appliance/initrd.img``, built beside its
place and renamed into it.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from nestor.errors import ImageError

from . import contract, packages, publish
from .cpio import NewcWriter, write_newc
from .kernel import KernelImage, build_kernel, copy_modules, elf_is_static, load_kernel
from .steps import Progress

BOOT_LINE = contract.APPLIANCE_BOOT_LINE
FORMAT = 1
_TIMEOUT_QUICK = 120


BUSYBOX_PACKAGE = "busybox-static"
APPLIANCE_DIR = "appliance"
INITRD = "initrd.img"
# Modules the appliance carries (fnmatch patterns on normalised names, '-' -> '_'), plus
# their dependencies. Names that are built in or absent in a kernel are skipped.
APPLIANCE_MODULES: tuple[str, ...] = (
    "virtio_mmio",
    "virtio_net",
    "virtio_blk",
    "virtio_console",
    "virtio_balloon",
    "virtio_rng",
    "9p",
    "9pnet",
    "9pnet_virtio",
    "kvm",
    "kvm_amd",
    "kvm_intel",
    "irqbypass",
    "bridge",
    "veth",
    "macvlan",
    "tun",
    "nf_tables",
    "nft_*",
    "nf_nat",
    "nf_conntrack",
    "nf_reject_ipv4",
    "nf_reject_ipv6",
    "ext4",
    "jbd2",
    "mbcache",
    "crc16",
    "crc32c_generic",
    "crc32c_intel",
    "libcrc32c",
    "af_packet",
    "button",
    "evdev",
)
INITTAB = """\
::sysinit:/init sysinit
::once:/init run
::respawn:/init console
::ctrlaltdel:/sbin/reboot
::shutdown:/init shutdown
"""
UDHCPC_SCRIPT = '#!/bin/sh\nexec /init udhcpc "$@"\n'
POWER_BUTTON_SCRIPT = "#!/bin/sh\nexec /sbin/poweroff\n"
PROFILE = 'export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nPS1="$(hostname):\\w# "\n'


@dataclass(frozen=True)
class ApplianceImage:
    kernel: KernelImage
    initrd: Path  # busybox initramfs (uncompressed newc cpio)


def build_appliance(images_dir: Path, progress: Progress, force: bool = False) -> ApplianceImage:
    """Build (or reuse) the kernel and the busybox initramfs under ``images_dir/appliance``.

    ``force`` rebuilds the kernel too.
    """
    kernel = build_kernel(images_dir, progress, force=force)
    if not force:
        cached = load_appliance(images_dir)
        if cached is not None:
            progress(f"appliance: cached ({cached.initrd})")
            return cached
    started = time.monotonic()
    with publish.Staging(images_dir, APPLIANCE_DIR) as stage:
        busybox = find_static_busybox(stage, progress)
        progress("building initramfs")
        root = stage / "root"
        _populate_rootfs(root, busybox, kernel, progress)
        write_newc(root, stage / INITRD)
        shutil.rmtree(root)
        _write_manifest(stage, {"format": FORMAT, "kernel_version": kernel.version, "recipe": appliance_recipe()})
        publish.publish(stage, images_dir / APPLIANCE_DIR)
    image = load_appliance(images_dir)
    if image is None:
        raise ImageError("the appliance image vanished right after it was built")
    size_mb = image.initrd.stat().st_size / 1e6
    progress(f"appliance: done in {time.monotonic() - started:.1f} s (initrd {size_mb:.1f} MB)")
    return image


def load_appliance(images_dir: Path) -> ApplianceImage | None:
    """The cached appliance, or None if it is not built (or was built for another kernel)."""
    kernel = load_kernel(images_dir)
    if kernel is None:
        return None
    top = images_dir / APPLIANCE_DIR
    manifest = _read_manifest(top)
    if manifest is None or manifest.get("kernel_version") != kernel.version:
        return None
    if manifest.get("recipe") != appliance_recipe():
        return None  # built by an older nestor (another init script or module list)
    initrd = top / INITRD
    if not initrd.is_file():
        return None
    return ApplianceImage(kernel=kernel, initrd=initrd)


def make_run_cpio(script: Path, out: Path) -> None:
    """Write a newc cpio holding ``script`` as ``/nestor/run.sh`` (mode 0755).

    It is meant to be concatenated after the appliance initrd (the kernel unpacks both).
    """
    from ..bootplan import MAX_RUN_SCRIPT
    from ..files import write_private

    try:
        with open(script, "rb") as f:  # bounded: the file may have grown since `vm new` checked it
            data = f.read(MAX_RUN_SCRIPT + 1)
    except OSError as exc:
        raise ImageError(f"cannot read the run script {script}: {exc.strerror}") from exc
    if len(data) > MAX_RUN_SCRIPT:
        raise ImageError(f"the run script {script} is bigger than {MAX_RUN_SCRIPT >> 20} MiB")
    writer = NewcWriter()
    run_script = contract.GUEST_RUN_SCRIPT.lstrip("/")
    writer.directory(run_script.rsplit("/", 1)[0], 0o755)
    writer.file(run_script, data, 0o755)
    write_private(out, writer.finish())  # a copy of a user's file, possibly a secret: 0600


def find_static_busybox(workdir: Path, progress: Progress) -> Path:
    """A static busybox: the host's (busybox-static) or one from ``apt-get download``."""
    for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if candidate.is_file() and elf_is_static(candidate):
            return candidate
    fetch = workdir / "busybox-deb"
    fetch.mkdir()
    deb = packages.apt_download(BUSYBOX_PACKAGE, fetch, progress)
    packages.dpkg_extract(deb, fetch / "root")
    for candidate in (fetch / "root" / "bin" / "busybox", fetch / "root" / "usr" / "bin" / "busybox"):
        if candidate.is_file() and elf_is_static(candidate):
            return candidate
    raise ImageError(f"{BUSYBOX_PACKAGE} holds no static busybox")


def busybox_applets(busybox: Path) -> list[str]:
    """Install paths of the applets (``usr/bin/awk``, ``sbin/init`` ...)."""
    proc = packages.run([str(busybox), "--list-full"], timeout=_TIMEOUT_QUICK)
    return [line.strip().lstrip("/") for line in proc.stdout.splitlines() if line.strip()]


def init_script() -> str:
    return (Path(__file__).parent / "appliance_init.sh").read_text()


def guest_lib() -> str:
    """/etc/nestor/lib.sh: the shell functions both guest inits share."""
    return (Path(__file__).parent / "guest_lib.sh").read_text()


def guest_files() -> dict[str, str]:
    """The contract and the shared library, as both inits source them (path in the guest -> text)."""
    return {contract.GUEST_CONTRACT: contract.shell_fragment(), contract.GUEST_LIB: guest_lib()}


def appliance_recipe() -> str:
    """A digest of everything that shapes the initramfs, so a cached one from older code is rebuilt."""
    parts = [str(FORMAT), init_script(), *(f"{path}\0{text}" for path, text in sorted(guest_files().items())),
             INITTAB, UDHCPC_SCRIPT, POWER_BUTTON_SCRIPT, PROFILE, *APPLIANCE_MODULES]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _populate_rootfs(root: Path, busybox: Path, kernel: KernelImage, progress: Progress) -> None:
    for d in (
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "root",
        "var/log",
        "usr/share/udhcpc",
        "etc/acpi/PWRF",
        "newroot",
    ):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(busybox, root / "bin" / "busybox")
    (root / "bin" / "busybox").chmod(0o755)
    for applet in busybox_applets(busybox):
        link = root / applet
        if applet in ("bin/busybox",) or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")
    _write_exec(root / "init", init_script())
    for path, text in guest_files().items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(text)
    (root / "etc" / "inittab").write_text(INITTAB)
    (root / "etc" / "profile").write_text(PROFILE)
    (root / "etc" / "hostname").write_text("nestor\n")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    _write_exec(root / "usr" / "share" / "udhcpc" / "default.script", UDHCPC_SCRIPT)
    _write_exec(root / "etc" / "acpi" / "PWRF" / "00000080", POWER_BUTTON_SCRIPT)
    progress(f"copying kernel modules for {kernel.version}")
    modules = root / "lib" / "modules" / kernel.version
    modules.mkdir(parents=True)
    chosen = copy_modules(kernel, modules, APPLIANCE_MODULES)
    progress(f"{len(chosen)} modules copied")


def _write_exec(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _read_manifest(top: Path) -> dict[str, object] | None:
    data = publish.read_manifest(top)
    return data if data is not None and data.get("format") == FORMAT else None


def _write_manifest(stage: Path, data: dict[str, object]) -> None:
    publish.write_manifest(stage, data)
