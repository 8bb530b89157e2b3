"""The nested-host root filesystem: a lean Debian bookworm tree for an L1 that runs nestor.

``build_nested_host`` makes it with ``mmdebstrap --variant=apt`` (python3, QEMU, the guest agent,
iproute2, nftables, dnsmasq, busybox), the kernel's module tree, and busybox init
(``/sbin/init``) whose inittab runs ``nested_host_init.sh`` (with ``guest_lib.sh`` and the
contract's ``contract.sh`` beside it in /etc/nestor). It holds Debian packages only, so it is
rarely rebuilt: its manifest keeps a hash of its inputs (package list, kernel version, init
files), and only a change there (or ``force``) rebuilds it. An L1 boots it with the appliance's
kernel and initrd (``nestor.root=/dev/vda``) and gets nestor from the payload disk (payload.py).

Layout under ``images_dir``: ``nested-host/manifest.json  nested-host/rootfs-<inputs hash>.img``.
Each name carries its hash: an L1 disk is a qcow2 overlay on the rootfs, and an overlay must
never find a different rootfs behind the same name after a rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from nestor.engine import runas
from nestor.errors import ImageError

from . import contract, publish
from .ext4 import describe_size, make_ext4, round_mib, tree_size
from .initramfs import build_appliance, guest_files, load_appliance
from .kernel import KernelImage, install_modules
from .packages import APT_OPTIONS, DPKG_OPTIONS, run_mmdebstrap
from .steps import Progress, Steps

BOOT_LINE = contract.NESTED_HOST_BOOT_LINE
GUEST_PAYLOAD = contract.GUEST_PAYLOAD
GUEST_HOME = contract.GUEST_HOME
GUEST_INIT = contract.GUEST_INIT

# The user the L1's QEMUs run as (engine/runas.py), made as scripts/setup makes it on the host.
# No kvm group: the L1 has no udev, and QEMU opens /dev/kvm as root before it drops root.
QEMU_USERADD: tuple[str, ...] = ("--system", "--no-create-home", "--home-dir", "/nonexistent",
                                 "--shell", "/usr/sbin/nologin", "--user-group", runas.USER)


NESTED_HOST_DIR = "nested-host"
ROOTFS_PREFIX = "rootfs-"  # rootfs-<inputs hash>.img: a rebuilt rootfs never poses as the old one
FORMAT = 1
SUITE = "bookworm"
PACKAGES: tuple[str, ...] = (
    "python3", "qemu-system-x86", "qemu-guest-agent", "iproute2", "nftables", "dnsmasq-base",
    "busybox", "kmod", "iputils-ping", "e2fsprogs", "qemu-utils",
)
ROOTFS_LABEL = "nestor-root"
# Free space in a nested host for its VMs' overlays, logs and saved state: `vm save`/`lab save` of
# the VMs inside writes their used memory here (400 MiB could not hold a 1 GiB l2's save, depth3.yaml).
# The image is sparse (mkfs.ext4 -d into a truncated file): the headroom costs no disk until used.
ROOTFS_HEADROOM = 2 << 30
INITTAB = f"""\
# nestor nested host: busybox init. `poweroff`, `reboot` and the ACPI power button end up here.
::sysinit:{GUEST_INIT} sysinit
::once:{GUEST_INIT} ready
::respawn:{GUEST_INIT} agent
::respawn:{GUEST_INIT} api
::respawn:{GUEST_INIT} console
::ctrlaltdel:/bin/busybox reboot
::shutdown:{GUEST_INIT} shutdown
"""
# qemu-ga's guest-shutdown runs `/sbin/shutdown -h -P +0 "hypervisor initiated shutdown"`
# (-r to reboot, -H to halt); with busybox init, `busybox poweroff` asks PID 1 to do it properly.
SHUTDOWN_SCRIPT = """\
#!/bin/sh
# nestor nested host: no systemd. Busybox init runs the ::shutdown action, then powers off.
action=poweroff
for arg in "$@"; do
    case "$arg" in
        -r|--reboot) action=reboot ;;
        -H|--halt) action=halt ;;
        -c) echo "shutdown: nothing to cancel" >&2; exit 0 ;;
    esac
done
exec /bin/busybox "$action"
"""
POWER_BUTTON_SCRIPT = "#!/bin/sh\nexec /bin/busybox poweroff\n"
UDHCPC_SCRIPT = f'#!/bin/sh\nexec {GUEST_INIT} udhcpc "$@"\n'
PROFILE_SCRIPT = f"""\
# nestor nested host
export NESTOR_HOME={GUEST_HOME}
case ":$PATH:" in
    *:{GUEST_PAYLOAD}/bin:*) ;;
    *) PATH="{GUEST_PAYLOAD}/bin:$PATH" ;;
esac
export PATH
"""
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
# Text files written into the rootfs: path -> (content, mode).
ROOTFS_FILES: dict[str, tuple[str, int]] = {
    "etc/inittab": (INITTAB, 0o644),
    "sbin/shutdown": (SHUTDOWN_SCRIPT, 0o755),
    "etc/acpi/PWRF/00000080": (POWER_BUTTON_SCRIPT, 0o755),
    "etc/nestor/udhcpc": (UDHCPC_SCRIPT, 0o755),
    "etc/profile.d/nestor.sh": (PROFILE_SCRIPT, 0o644),
    "etc/hostname": ("nestor-l1\n", 0o644),
    "etc/hosts": (HOSTS, 0o644),
    "etc/resolv.conf": ("", 0o644),
}
ROOTFS_SYMLINKS: dict[str, str] = {
    "sbin/init": "/bin/busybox",
    "sbin/poweroff": "/bin/busybox",
    "sbin/reboot": "/bin/busybox",
    "sbin/halt": "/bin/busybox",
    "usr/local/bin/nestor": f"{GUEST_PAYLOAD}/bin/nestor",
    f"{GUEST_HOME.lstrip('/')}/images": f"{GUEST_PAYLOAD}/images",
}
# Commands the lean rootfs lacks (no util-linux mount, no procps), provided by busybox in
# /usr/local/bin when no package installed them.
BUSYBOX_TOOLS: tuple[str, ...] = ("mount", "umount", "ps", "pidof", "free", "top", "less", "vi", "nc")
ROOTFS_DIRS: tuple[str, ...] = (GUEST_PAYLOAD.lstrip("/"), GUEST_HOME.lstrip("/"), "root", "run", "tmp")


@dataclass(frozen=True)
class NestedHostImage:
    kernel: KernelImage  # same kernel as the appliance
    initrd: Path  # the appliance initrd (its /init handles nestor.root=)
    rootfs: Path  # raw ext4 disk image: Debian bookworm rootfs (rarely rebuilt: only Debian packages)


def build_nested_host(images_dir: Path, progress: Progress, force: bool = False) -> NestedHostImage:
    """Build (or reuse) the nested-host rootfs under ``images_dir/nested-host``.

    The kernel and the appliance initrd come from ``build_appliance`` (cached there). ``force``
    rebuilds the rootfs, not the kernel.
    """
    appliance = build_appliance(images_dir, progress)
    if not force:
        cached = load_nested_host(images_dir)
        if cached is not None:
            progress(f"nested-host: cached ({cached.rootfs}, {describe_size(cached.rootfs)})")
            return cached
    if os.geteuid() != 0:
        raise ImageError("building the nested-host image needs root (mmdebstrap --mode=root)",
                         hint="run `nestor image build nested-host` as root")
    started = time.monotonic()
    digest = inputs_hash(rootfs_inputs(appliance.kernel.version))
    with publish.Staging(images_dir, NESTED_HOST_DIR) as stage:
        rootfs = stage / "rootfs"
        out = stage / "out"
        out.mkdir()
        log = images_dir / f"{NESTED_HOST_DIR}.log"
        step = Steps(progress, started)
        step(f"[1/4] mmdebstrap {SUITE} ({len(PACKAGES)} packages, variant apt, no recommends)")
        run_mmdebstrap(rootfs, log, step.sub)
        step(f"[1/4] mmdebstrap done ({tree_size(rootfs) / 1e6:.0f} MB)")
        step(f"[2/4] kernel modules {appliance.kernel.version}")
        install_modules(appliance.kernel, rootfs)
        step("[3/4] init, inittab, shutdown, acpid, agent")
        configure_rootfs(rootfs)
        used = tree_size(rootfs)
        size = rootfs_image_size(used)
        step(f"[4/4] mkfs.ext4 -d ({used / 1e6:.0f} MB used, image {size >> 20} MiB)")
        make_ext4(rootfs, out / rootfs_name(digest), size, ROOTFS_LABEL, journal=True)
        publish.write_manifest(out, {"format": FORMAT, "inputs": digest,
                              "kernel_version": appliance.kernel.version,
                              "packages": list(PACKAGES), "used_bytes": used,
                              "size_bytes": size})
        publish.publish(out, images_dir / NESTED_HOST_DIR)
        step("removing the build tree")
    image = load_nested_host(images_dir)
    if image is None:
        raise ImageError("the nested-host image vanished right after it was built")
    progress(f"nested-host: done in {time.monotonic() - started:.1f} s ({image.rootfs}, "
             f"{describe_size(image.rootfs)})")
    return image


def load_nested_host(images_dir: Path) -> NestedHostImage | None:
    """The cached nested-host image, or None if it is not built or its inputs changed."""
    appliance = load_appliance(images_dir)
    if appliance is None:
        return None
    top = images_dir / NESTED_HOST_DIR
    manifest = publish.read_manifest(top)
    if manifest is None or manifest.get("format") != FORMAT:
        return None
    digest = inputs_hash(rootfs_inputs(appliance.kernel.version))
    if manifest.get("inputs") != digest:
        return None
    rootfs = top / rootfs_name(digest)
    if not (rootfs.is_file() or rootfs.is_block_device()):  # inside a nested host: its read-only disk
        return None
    return NestedHostImage(kernel=appliance.kernel, initrd=appliance.initrd, rootfs=rootfs)


def init_script() -> str:
    return (Path(__file__).parent / "nested_host_init.sh").read_text()


def rootfs_inputs(kernel_version: str) -> dict[str, object]:
    """Everything the rootfs is made of; a change here means a rebuild."""
    return {
        "format": FORMAT,
        "suite": SUITE,
        "packages": sorted(PACKAGES),
        "apt_options": list(APT_OPTIONS),
        "dpkg_options": list(DPKG_OPTIONS),
        "kernel_version": kernel_version,
        "init": init_script(),
        "guest_files": dict(sorted(guest_files().items())),
        "files": {path: [text, mode] for path, (text, mode) in sorted(ROOTFS_FILES.items())},
        "symlinks": dict(sorted(ROOTFS_SYMLINKS.items())),
        "dirs": sorted(ROOTFS_DIRS),
        "busybox_tools": sorted(BUSYBOX_TOOLS),
        "headroom": ROOTFS_HEADROOM,
        "qemu_user": list(QEMU_USERADD),
    }


def inputs_hash(inputs: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def rootfs_name(digest: str) -> str:
    return f"{ROOTFS_PREFIX}{digest[:16]}.img"


def mmdebstrap_argv(target: Path) -> list[str]:
    return [
        "mmdebstrap", "--mode=root", "--variant=apt",
        *(f"--aptopt={opt}" for opt in APT_OPTIONS),
        *(f"--dpkgopt={opt}" for opt in DPKG_OPTIONS),
        f"--include={','.join(PACKAGES)}",
        SUITE, str(target),
    ]


def rootfs_image_size(used: int) -> int:
    """Used bytes plus ext4 overhead (~5 %, the journal) plus the headroom, in whole MiB."""
    return round_mib(int(used * 1.05) + (64 << 20) + ROOTFS_HEADROOM)


def configure_rootfs(rootfs: Path) -> None:
    """Install the init script, inittab, shutdown, acpid and udhcpc scripts and symlinks."""
    for directory in ROOTFS_DIRS:
        (rootfs / directory).mkdir(parents=True, exist_ok=True)
    _write(rootfs / GUEST_INIT.lstrip("/"), init_script(), 0o755)
    for path, text in guest_files().items():
        _write(rootfs / path.lstrip("/"), text, 0o644)
    for path, (text, mode) in ROOTFS_FILES.items():
        _write(rootfs / path, text, mode)
    for path, target in ROOTFS_SYMLINKS.items():
        link = rootfs / path
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)
        link.symlink_to(target)
    for tool in BUSYBOX_TOOLS:
        if not any((rootfs / d / tool).exists() for d in ("bin", "sbin", "usr/bin", "usr/sbin")):
            link = rootfs / "usr" / "local" / "bin" / tool
            link.unlink(missing_ok=True)
            link.symlink_to("/bin/busybox")
    (rootfs / "tmp").chmod(0o1777)
    add_qemu_user(rootfs)
    for leftover in ("var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin"):
        (rootfs / leftover).unlink(missing_ok=True)
    busybox = rootfs / "bin" / "busybox"
    if not busybox.exists():
        raise ImageError("nested-host image: step configure failed: the rootfs has no /bin/busybox")


def add_qemu_user(rootfs: Path) -> None:
    """The L1's nestor runs its L2s' QEMUs as the same unprivileged user as on the host
    (engine/runas.py); the host's useradd writes the rootfs's passwd/group/shadow (--root)."""
    passwd = rootfs / "etc" / "passwd"
    if passwd.is_file() and any(line.split(":")[0] == runas.USER for line in passwd.read_text().splitlines()):
        return
    proc = subprocess.run(["useradd", "--root", str(rootfs), *QEMU_USERADD], capture_output=True, text=True,
                          check=False, timeout=60)
    if proc.returncode != 0:
        raise ImageError(f"nested-host image: useradd {runas.USER} failed: {proc.stderr.strip()}",
                         hint="useradd comes with Debian's passwd package")


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    path.chmod(mode)
