"""What a VM boots from: its image (or explicit kernel) turned into kernel, initrd, disks, append.

Image files are looked up here; per-VM derived files (the initrd with the run script, the
copy-on-write overlay of the nested-host root disk) are made here, in the VM's directory.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from . import files, paths
from .engine import qemu_img
from .engine.argv import Disk
from .errors import InvalidInput, NotFound, StateError
from .files import FILE_MODE, open_private, write_private
from .images import qcow2
from .model import BootSource, shown, validate_text

IMAGES = ("appliance", "nested-host")
MAX_RUN_SCRIPT = 16 << 20  # --run: copied into the VM's initrd, so read whole into memory
MAX_KERNEL = 256 << 20
MAX_INITRD = 1 << 30
MAX_PATH = 1024
OVERLAY = "disk.qcow2"
OVERLAY_BASE = "disk.base"


@dataclass(frozen=True)
class BootPlan:
    kernel: Path
    initrd: Path | None
    append: list[str] = field(default_factory=list)
    disks: tuple[Disk, ...] = ()
    agent: bool = False  # the image runs qemu-guest-agent


def image_built(images: Path, image: str) -> bool:
    from .images import initramfs

    if image == "appliance":
        return initramfs.load_appliance(images) is not None
    if image == "nested-host":
        from .images import rootfs

        return rootfs.load_nested_host(images) is not None and initramfs.load_appliance(images) is not None
    raise InvalidInput(f"unknown image '{image}'", hint=f"images: {', '.join(IMAGES)}")


def check(images: Path, boot: BootSource) -> BootSource:
    """Validate a boot source at `vm new`; return it with absolute paths."""
    if boot.run_script and boot.image != "appliance":
        raise InvalidInput("--run works with the appliance image only", hint="drop --run, or use --image appliance")
    if boot.kernel:
        kernel = _input_file(boot.kernel, "--kernel", "kernel file", MAX_KERNEL)
        initrd = _input_file(boot.initrd, "--initrd", "initrd file", MAX_INITRD) if boot.initrd else None
        boot = BootSource(kernel=str(kernel), initrd=str(initrd) if initrd else None,
                          append=boot.append, run_script=boot.run_script)
    elif not image_built(images, boot.image or ""):
        raise NotFound(f"image '{boot.image}' is not built", hint=f"nestor image build {boot.image}")
    if boot.run_script:
        script = _input_file(boot.run_script, "--run", "script", MAX_RUN_SCRIPT)
        boot = BootSource(image=boot.image, append=boot.append, run_script=str(script))
    return boot


def _input_file(given: str, option: str, what: str, limit: int) -> Path:
    """A user's file for QEMU or the guest: a regular file (not a device, FIFO or directory) no
    bigger than `limit`, named by a path QEMU's option syntax cannot misread. Absolute."""
    validate_text(given, f"{option} path", MAX_PATH)
    if "," in given:
        raise InvalidInput(f"{option} path {shown(given)} contains ','",
                           hint="QEMU reads ',' as an option separator: rename the file")
    path = files.regular_file(Path(given), what, hint=f"give an existing regular file to {option}")
    st = path.stat()
    if st.st_size > limit:
        raise InvalidInput(f"{what} {shown(given)} is too big ({st.st_size >> 20} MiB, at most {limit >> 20} MiB)",
                           hint=f"give a smaller file to {option}")
    if "," in str(path):
        raise InvalidInput(f"{option} path {path} contains ','", hint="QEMU reads ',' as an option separator")
    return path


def plan(images: Path, boot: BootSource, name: str, vm_dir: Path, level: int) -> BootPlan:
    """`level` is the guest's nesting level (this host's + 1), passed as nestor.level=."""
    from .images import contract, initramfs

    if boot.kernel:  # QEMU opens them by path at each start: checked each time (a link put there since is refused)
        kernel = _input_file(boot.kernel, "--kernel", "kernel file", MAX_KERNEL)
        initrd = _input_file(boot.initrd, "--initrd", "initrd file", MAX_INITRD) if boot.initrd else None
        return BootPlan(kernel, initrd)
    app = initramfs.load_appliance(images)
    if app is None:
        raise NotFound(f"image '{boot.image}' is not built", hint=f"nestor image build {boot.image}")
    base = ["console=ttyS0", "quiet", "panic=-1", *contract.cmdline_params(hostname=name), f"nestor.level={level}"]
    if boot.image == "appliance":
        initrd = _with_run_cpio(app.initrd, vm_dir) if boot.run_script else app.initrd
        return BootPlan(app.kernel.vmlinux, initrd, base)
    from .images import payload, rootfs

    host = rootfs.load_nested_host(images)
    if host is None:
        raise NotFound("image 'nested-host' is not built", hint="nestor image build nested-host")
    payload_disk = payload.build_payload(images, lambda _line: None)
    return nested_host_plan(host.rootfs, payload_disk, vm_dir, name, [*base, *contract.cmdline_params(root="/dev/vda")],
                            host.kernel.vmlinux, host.initrd)


def nested_host_plan(rootfs: Path, payload_disk: Path, vm_dir: Path, name: str, append: list[str],
                     kernel: Path, initrd: Path | None) -> BootPlan:
    """A nested host's disks: vda a copy-on-write overlay of this level's pristine root filesystem
    (a file at L0, this level's own read-only rootfs disk below), vdb the payload read-only, vdc
    the pristine rootfs read-only (contract.GUEST_ROOTFS_DISK: the guest's nested-host image for
    the level below). Nothing is copied: every level's disks are overlays of the one L0 file."""
    base = rootfs.resolve()
    block = base.is_block_device()
    overlay = _overlay(rootfs, vm_dir, name)
    # The overlay's backing is pinned on the command line (an escaped QEMU may rewrite its header)
    disks = (Disk(overlay, "qcow2", backing=base, backing_format="raw", pin_backing=True,
                  backing_driver="host_device" if block else "file"),
             Disk(payload_disk, readonly=True),
             Disk(base, readonly=True))
    return BootPlan(kernel, initrd, append, disks, agent=True)


def base_identity(base: Path) -> str:
    """What an overlay was made from: the image's path, and for a file its mtime and size; for a
    block device (a nested host's rootfs disk, whose node is made anew at each boot) its name
    and size."""
    resolved = base.resolve()
    if resolved.is_block_device():
        with open(resolved, "rb") as disk:
            size = disk.seek(0, os.SEEK_END)
        return f"{resolved} {base.name} {size}"
    st = resolved.stat()
    return f"{resolved} {st.st_mtime_ns} {st.st_size}"


def _overlay(base: Path, vm_dir: Path, name: str) -> Path:
    """A copy-on-write overlay of the shared root disk, made at the first start.

    The overlay holds the guest's data: it is never deleted implicitly. If the base image changed
    since (a rebuilt image, a moved home) the start is refused with a hint to `vm reset-disk`.
    The stamp is written before the overlay appears (a kill in between leaves only a .tmp)."""
    overlay = vm_dir / OVERLAY
    stamp = vm_dir / OVERLAY_BASE
    identity = base_identity(base)
    if overlay.exists():
        try:
            made_from = stamp.read_text()
        except OSError:
            made_from = "(unknown: no record)"
        if made_from != identity:
            raise StateError(
                f"vm '{name}': its disk is an overlay of another nested-host image ({made_from.split(' ')[0]}) "
                f"than the current one ({base.resolve()}); nestor does not delete a disk implicitly",
                hint=f"nestor vm reset-disk {name} discards the VM's disk and starts from the current image")
        qcow2.check(overlay, base.resolve(), f"vm '{name}': its disk", backing_format="raw")
        return overlay
    tmp = vm_dir / (OVERLAY + ".tmp")
    tmp.unlink(missing_ok=True)
    qemu_img.run(["create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base.resolve()), str(tmp)],
                 "cannot create the overlay disk", timeout=60)
    os.chmod(tmp, FILE_MODE)  # the L1's disk: the guest's data, root's alone
    write_private(stamp, identity)
    tmp.replace(overlay)
    return overlay


def reset_disk(vm_dir: Path) -> bool:
    """Discard a VM's overlay disk (the next start makes a fresh one). True if there was one."""
    found = (vm_dir / OVERLAY).exists()
    for name in (OVERLAY, OVERLAY + ".tmp", OVERLAY_BASE):
        (vm_dir / name).unlink(missing_ok=True)
    return found


def _with_run_cpio(initrd: Path, vm_dir: Path) -> Path:
    """The appliance initrd with the VM's run script appended (the kernel unpacks both)."""
    combined = vm_dir / paths.INITRD
    run = vm_dir / paths.RUN_CPIO
    if not combined.exists() or combined.stat().st_mtime < max(initrd.stat().st_mtime, run.stat().st_mtime):
        tmp = combined.with_suffix(".tmp")
        with os.fdopen(open_private(tmp), "wb") as out:
            for part in (initrd, run):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out)
        tmp.replace(combined)
    return combined
