"""The nested-host image: a lean Debian bookworm root filesystem for an L1 that runs nestor.

Two disks make an L1 (booted with the appliance kernel and initrd, ``nestor.root=/dev/vda``):

* the **rootfs** (``build_nested_host``): ``mmdebstrap --variant=apt`` with python3, QEMU, the
  guest agent, iproute2, nftables, dnsmasq and busybox; the kernel's module tree; busybox init
  (``/sbin/init``) whose inittab runs ``nested_host_init.sh``. It holds Debian packages only, so it
  is rarely rebuilt: its manifest keeps a hash of its inputs (package list, kernel version, init
  files), and only a change there (or ``force``) rebuilds it.
* the **payload** (``build_payload``): a small read-only ext4 disk mounted at ``/opt/nestor``
  holding nestor from the checkout, its pure-Python dependencies copied from the running venv,
  a ``bin/nestor`` wrapper, and the appliance image for L2. It is keyed by a content hash, so
  every code change gives a new payload in about a second, without touching the rootfs.

Layout under ``images_dir``::

    nested-host/manifest.json  nested-host/rootfs-<inputs hash>.img
    payload/<hash>.img          (the newest few are kept)

Both are built beside their final place and renamed into it. Each name carries its hash: an L1
disk is a qcow2 overlay on the rootfs, and an overlay must never find a different rootfs behind
the same name after a rebuild (it fails to open the missing old one instead).
"""

from __future__ import annotations

import compileall
import hashlib
import importlib.metadata as metadata
import json
import os
import py_compile
import re
import shutil
import subprocess
import tempfile
import threading
import time
import tomllib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from nestor.engine import runas
from nestor.errors import ImageError
from nestor.images.appliance import (
    APPLIANCE_DIR,
    INITRD,
    KERNEL_DIR,
    VMLINUX,
    ApplianceImage,
    KernelImage,
    build_appliance,
    load_appliance,
    run_depmod,
)

from . import publish
from .publish import MANIFEST

BOOT_LINE = "nestor-nested-host: ready"

NESTED_HOST_DIR = "nested-host"
ROOTFS_PREFIX = "rootfs-"  # rootfs-<inputs hash>.img: a rebuilt rootfs never poses as the old one
PAYLOAD_DIR = "payload"
FORMAT = 1
PAYLOAD_FORMAT = 1

SUITE = "bookworm"
PACKAGES: tuple[str, ...] = (
    "python3", "qemu-system-x86", "qemu-guest-agent", "iproute2", "nftables", "dnsmasq-base",
    "busybox", "kmod", "iputils-ping", "e2fsprogs",
)
APT_OPTIONS: tuple[str, ...] = ('APT::Install-Recommends "false"',)
# Documentation, man pages and translations are of no use in an L1 (~30 MB less to write).
DPKG_OPTIONS: tuple[str, ...] = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
ROOTFS_LABEL = "nestor-root"
PAYLOAD_LABEL = "nestor-payload"
ROOTFS_HEADROOM = 400 << 20  # free space for L2 disks, overlays, logs
PAYLOAD_KEEP = 3

# Where the guest sees things (nested_host_init.sh uses the same paths).
GUEST_PAYLOAD = "/opt/nestor"
GUEST_HOME = "/var/lib/nestor"
GUEST_INIT = "/etc/nestor/init.sh"

# The user the L1's QEMUs run as (engine/runas.py), made as scripts/setup makes it on the host.
# No kvm group: the L1 has no udev, and QEMU opens /dev/kvm as root before it drops root.
QEMU_USERADD: tuple[str, ...] = ("--system", "--no-create-home", "--home-dir", "/nonexistent",
                                 "--shell", "/usr/sbin/nologin", "--user-group", runas.USER)

# The runtime dependencies nestor needs (used when the checkout's pyproject.toml is unreadable).
DEFAULT_DEPENDENCIES: tuple[str, ...] = ("qemu.qmp", "pyroute2", "click", "rich")

Progress = Callable[[str], None]

_TIMEOUT_MMDEBSTRAP = 1800
_TIMEOUT_MKFS = 600

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


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def build_nested_host(images_dir: Path, progress: Progress, force: bool = False) -> NestedHostImage:
    """Build (or reuse) the nested-host rootfs under ``images_dir/nested-host``.

    The kernel and the appliance initrd come from ``build_appliance`` (cached there). ``force``
    rebuilds the rootfs, not the kernel.
    """
    appliance = build_appliance(images_dir, progress)
    if not force:
        cached = load_nested_host(images_dir)
        if cached is not None:
            progress(f"nested-host: cached ({cached.rootfs}, {_describe_size(cached.rootfs)})")
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
        step = _Steps(progress, started)
        step(f"[1/4] mmdebstrap {SUITE} ({len(PACKAGES)} packages, variant apt, no recommends)")
        run_mmdebstrap(rootfs, log, step.sub)
        step(f"[1/4] mmdebstrap done ({_tree_size(rootfs) / 1e6:.0f} MB)")
        step(f"[2/4] kernel modules {appliance.kernel.version}")
        install_modules(appliance.kernel, rootfs)
        step("[3/4] init, inittab, shutdown, acpid, agent")
        configure_rootfs(rootfs)
        used = _tree_size(rootfs)
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
             f"{_describe_size(image.rootfs)})")
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
    if not rootfs.is_file():
        return None
    return NestedHostImage(kernel=appliance.kernel, initrd=appliance.initrd, rootfs=rootfs)


def build_payload(images_dir: Path, source_root: Path, progress: Progress) -> Path:
    """The payload disk for an L1 (nestor, its dependencies, the appliance), built if needed.

    ``source_root`` is the nestor checkout (``source_root/src/nestor``). The image is
    ``images_dir/payload/<hash>.img``, keyed by the content of everything it holds.
    """
    started = time.monotonic()
    appliance = build_appliance(images_dir, progress)
    entries = payload_entries(source_root, appliance)
    digest = payload_hash(entries)
    top = images_dir / PAYLOAD_DIR
    image = top / f"{digest[:24]}.img"
    if image.is_file():
        os.utime(image)  # most recently used: pruning keeps it
        progress(f"payload: cached ({image.name}, {time.monotonic() - started:.2f} s)")
        return image
    step = _Steps(progress, started)
    step(f"payload: building from {source_root} ({len(entries)} files)")
    native = native_files(entries)
    if native:
        step(f"payload: warning: {len(native)} compiled extension(s) (e.g. {native[0]}): "
             "they only work if the guest's python matches")
    top.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".payload-build-", dir=top) as tmp:
        tree = Path(tmp) / "tree"
        populate_payload(tree, entries)
        step("payload: compiling bytecode")
        compile_tree(tree / "lib")
        used = _tree_size(tree)
        size = payload_image_size(used)
        step(f"payload: mkfs.ext4 -d ({used / 1e6:.1f} MB used, image {size >> 20} MiB)")
        staged = Path(tmp) / image.name
        make_ext4(tree, staged, size, PAYLOAD_LABEL, journal=False)
        os.replace(staged, image)
    pruned = prune_payloads(top, keep=PAYLOAD_KEEP)
    if pruned:
        step(f"payload: removed {len(pruned)} older payload(s)")
    step(f"payload: done ({image.name}, {_describe_size(image)})")
    return image


# --------------------------------------------------------------------------------------------
# Rootfs inputs and manifest
# --------------------------------------------------------------------------------------------


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
    return _round_mib(int(used * 1.05) + (64 << 20) + ROOTFS_HEADROOM)


def payload_image_size(used: int) -> int:
    """Content plus 20 % (and a little for ext4's own metadata), in whole MiB."""
    return _round_mib(int(used * 1.2) + (8 << 20))


def _round_mib(size: int) -> int:
    return -(-size // (1 << 20)) << 20


# --------------------------------------------------------------------------------------------
# Building the rootfs
# --------------------------------------------------------------------------------------------


def run_mmdebstrap(target: Path, log: Path, progress: Progress, argv: Sequence[str] | None = None,
                   what: str = "nested-host image") -> None:
    """Run mmdebstrap into ``target``; its ``I:``/``W:``/``E:`` lines go to ``progress``,
    everything to ``log``. Raises ImageError naming the step on failure. ``argv`` (default: the
    nested-host's) lets other images run their own mmdebstrap; ``what`` names them in errors."""
    argv = list(argv) if argv is not None else mmdebstrap_argv(target)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
    except FileNotFoundError as exc:
        raise ImageError("mmdebstrap is not installed",
                         hint="apt-get install -y --no-install-recommends mmdebstrap") from exc
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        proc.kill()

    timer = threading.Timer(_TIMEOUT_MMDEBSTRAP, expire)
    timer.start()
    tail: deque[str] = deque(maxlen=40)
    try:
        with log.open("w") as sink:
            sink.write(" ".join(argv) + "\n")
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip()
                sink.write(line + "\n")
                tail.append(line)
                if interesting_mmdebstrap_line(line):
                    progress(line)
        code = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    if code != 0:
        detail = mmdebstrap_error(list(tail)) or f"exit status {code}"
        if expired.is_set():
            detail = f"timed out after {_TIMEOUT_MMDEBSTRAP} s"
        raise ImageError(f"{what}: step mmdebstrap failed: {detail}",
                         hint=f"check that the Debian mirror is reachable (apt-get update); "
                              f"the full output is in {log}")


def interesting_mmdebstrap_line(line: str) -> bool:
    return line.startswith(("I: ", "W: ", "E: "))


def mmdebstrap_error(lines: Sequence[str]) -> str:
    """The most telling line of a failed mmdebstrap: its first ``E:`` line, else the last line."""
    errors = [line for line in lines if line.startswith("E: ")]
    if errors:
        return errors[0][3:].strip()
    rest = [line for line in lines if line.strip()]
    return rest[-1].strip() if rest else ""


def install_modules(kernel: KernelImage, rootfs: Path) -> None:
    """The kernel's whole module tree at ``lib/modules/<version>`` (hard links where possible),
    then depmod for it."""
    dest = rootfs / "lib" / "modules" / kernel.version
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(kernel.modules_dir, dest, symlinks=True, copy_function=_link_or_copy)
    run_depmod(rootfs, kernel.version)


def configure_rootfs(rootfs: Path) -> None:
    """Install the init script, inittab, shutdown, acpid and udhcpc scripts and symlinks."""
    for directory in ROOTFS_DIRS:
        (rootfs / directory).mkdir(parents=True, exist_ok=True)
    _write(rootfs / GUEST_INIT.lstrip("/"), init_script(), 0o755)
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


def make_ext4(tree: Path, image: Path, size: int, label: str, journal: bool) -> None:
    """A sparse raw ext4 image of ``size`` bytes holding ``tree`` (mkfs.ext4 -d, no loop mount)."""
    image.unlink(missing_ok=True)
    with image.open("wb") as sink:
        sink.truncate(size)
    argv = ["mkfs.ext4", "-q", "-F", "-L", label, "-m", "0"]
    if not journal:
        argv += ["-O", "^has_journal"]
    argv += ["-d", str(tree), str(image)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_MKFS, check=False)
    except FileNotFoundError as exc:
        raise ImageError("mkfs.ext4 is not installed", hint="apt-get install e2fsprogs") from exc
    except subprocess.TimeoutExpired as exc:
        image.unlink(missing_ok=True)
        raise ImageError(f"mkfs.ext4 -d {tree} timed out after {_TIMEOUT_MKFS} s") from exc
    if proc.returncode != 0:
        image.unlink(missing_ok=True)
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise ImageError(f"step mkfs.ext4 ({label}) failed: {detail[-1] if detail else proc.returncode}",
                         hint="e2fsprogs >= 1.43 is needed for mkfs.ext4 -d")


# --------------------------------------------------------------------------------------------
# The payload
# --------------------------------------------------------------------------------------------


def wrapper_script() -> str:
    """/opt/nestor/bin/nestor: the guest's python3 with the payload's lib on its path."""
    return (
        "#!/bin/sh\n"
        "# nestor from the payload disk; the byte code is precompiled (the disk is read-only).\n"
        f'PYTHONPATH="{GUEST_PAYLOAD}/lib${{PYTHONPATH:+:$PYTHONPATH}}"\n'
        "PYTHONDONTWRITEBYTECODE=1\n"
        f'NESTOR_HOME="${{NESTOR_HOME:-{GUEST_HOME}}}"\n'
        "export PYTHONPATH PYTHONDONTWRITEBYTECODE NESTOR_HOME\n"
        'exec /usr/bin/python3 -m nestor "$@"\n'
    )


@dataclass(frozen=True)
class Entry:
    """One file of the payload: from ``source`` (a file) or ``text`` (generated)."""

    dest: str  # relative to the payload root
    source: Path | None = None
    text: str | None = None
    mode: int = 0o644


def payload_entries(source_root: Path, appliance: ApplianceImage) -> list[Entry]:
    """Everything the payload holds, sorted by destination."""
    package = source_root / "src" / "nestor"
    if not (package / "__init__.py").is_file():
        raise ImageError(f"{source_root} is not a nestor checkout (no src/nestor/__init__.py)")
    entries = [Entry("bin/nestor", text=wrapper_script(), mode=0o755)]
    entries += [Entry(f"lib/nestor/{rel}", source=path, mode=_mode(path))
                for rel, path in package_files(package)]
    for dist in dependency_closure(project_dependencies(source_root)):
        entries += [Entry(f"lib/{rel}", source=path, mode=_mode(path))
                    for rel, path in distribution_files(dist)]
    entries += appliance_entries(appliance)
    by_dest = {entry.dest: entry for entry in entries}
    return [by_dest[dest] for dest in sorted(by_dest)]


def package_files(package: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of every file of a source package, without byte code."""
    for path in sorted(package.rglob("*")):
        rel = path.relative_to(package)
        if "__pycache__" in rel.parts or path.suffix in (".pyc", ".pyo") or not path.is_file():
            continue
        yield rel.as_posix(), path


def appliance_entries(appliance: ApplianceImage) -> list[Entry]:
    """What ``load_appliance(GUEST_PAYLOAD/images)`` needs: both manifests, vmlinux, the initrd
    and the kernel's module index files (not the modules: the L2 appliance carries its own)."""
    kernel = appliance.kernel
    kernel_top = kernel.vmlinux.parent
    appliance_top = appliance.initrd.parent
    modules_rel = f"images/{KERNEL_DIR}/lib/modules/{kernel.version}"
    entries = [
        Entry(f"images/{KERNEL_DIR}/{MANIFEST}", source=kernel_top / MANIFEST),
        Entry(f"images/{KERNEL_DIR}/{VMLINUX}", source=kernel.vmlinux, mode=0o755),
        Entry(f"images/{APPLIANCE_DIR}/{MANIFEST}", source=appliance_top / MANIFEST),
        Entry(f"images/{APPLIANCE_DIR}/{INITRD}", source=appliance.initrd),
    ]
    for index in sorted(kernel.modules_dir.glob("modules.*")):
        if index.is_file():
            entries.append(Entry(f"{modules_rel}/{index.name}", source=index))
    return entries


def project_dependencies(source_root: Path) -> list[str]:
    """The distribution names in ``[project] dependencies`` of the checkout's pyproject.toml."""
    try:
        data = tomllib.loads((source_root / "pyproject.toml").read_text())
        requirements = data["project"]["dependencies"]
    except (OSError, ValueError, KeyError, TypeError):
        return list(DEFAULT_DEPENDENCIES)
    names = [parse_requirement(str(r))[0] for r in requirements]
    return [name for name in names if name] or list(DEFAULT_DEPENDENCIES)


_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def parse_requirement(requirement: str) -> tuple[str, str]:
    """``'rich (>=13) ; extra == "x"'`` -> ``('rich', 'extra == "x"')``."""
    spec, _, marker = requirement.partition(";")
    match = _REQUIREMENT.match(spec)
    return (match.group(1) if match else ""), marker.strip()


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_closure(roots: Iterable[str]) -> list[metadata.Distribution]:
    """The installed distributions for ``roots`` and their requirements, recursively.

    Requirements behind an ``extra`` marker are skipped. Other markers are not evaluated: a
    requirement with a marker is followed if it is installed and skipped if it is not (the
    running interpreter installed what applied to it). A root that is not installed is an error.
    """
    found: dict[str, metadata.Distribution] = {}
    todo: list[tuple[str, bool]] = [(name, True) for name in roots]
    while todo:
        name, required = todo.pop()
        key = normalize(name)
        if key in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError as exc:
            if required:
                raise ImageError(f"payload: dependency {name} is not installed in {_venv()}",
                                 hint="pip install -e . in the checkout's venv") from exc
            continue
        found[key] = dist
        for requirement in dist.requires or []:
            dep, marker = parse_requirement(requirement)
            if not dep or "extra" in marker:
                continue
            todo.append((dep, not marker))
    return [found[key] for key in sorted(found)]


def distribution_files(dist: metadata.Distribution) -> list[tuple[str, Path]]:
    """(path relative to site-packages, path) of a distribution's installed files.

    Scripts outside site-packages (``../../bin/...``) and byte code are left out.
    """
    files = dist.files
    name = dist.metadata["Name"]
    if files is None:
        raise ImageError(f"payload: cannot list the files of {name} (no RECORD)",
                         hint=f"reinstall it: pip install --force-reinstall {name}")
    result: list[tuple[str, Path]] = []
    for file in files:
        rel = file.as_posix()
        parts = rel.split("/")
        if ".." in parts or rel.startswith("/") or "__pycache__" in parts or rel.endswith((".pyc", ".pyo")):
            continue
        path = Path(str(dist.locate_file(file)))
        if path.is_file():
            result.append((rel, path))
    return result


def native_files(entries: Iterable[Entry]) -> list[str]:
    """Destinations of compiled extension modules (the guest's python must match the host's)."""
    return [e.dest for e in entries if e.dest.startswith("lib/") and e.dest.endswith((".so", ".pyd"))]


def payload_hash(entries: Iterable[Entry]) -> str:
    """A content hash of the payload: destinations, modes and file contents."""
    digest = hashlib.sha256(f"nestor-payload {PAYLOAD_FORMAT}\n".encode())
    for entry in entries:
        digest.update(f"{entry.dest}\0{entry.mode:o}\0".encode())
        if entry.text is not None:
            digest.update(hashlib.sha256(entry.text.encode()).digest())
        elif entry.source is not None:
            digest.update(_file_digest(entry.source))
    return digest.hexdigest()


def populate_payload(tree: Path, entries: Iterable[Entry]) -> None:
    for entry in entries:
        dest = tree / entry.dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        if entry.text is not None:
            dest.write_text(entry.text)
        elif entry.source is not None:
            _link_or_copy(str(entry.source), str(dest))
            if dest.stat().st_mode & 0o777 != entry.mode and dest.stat().st_nlink == 1:
                dest.chmod(entry.mode)
            continue
        dest.chmod(entry.mode)


def compile_tree(lib: Path) -> None:
    """Byte-compile ``lib`` (hash-based, unchecked .pyc: the guest cannot write them and mtimes
    do not matter)."""
    # A file that does not compile (a template named *.py) just stays source-only.
    compileall.compile_dir(str(lib), quiet=2, workers=os.cpu_count() or 1,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)


def prune_payloads(top: Path, keep: int) -> list[Path]:
    """Remove all but the ``keep`` most recently used payload images; return the removed ones."""
    images = sorted(top.glob("*.img"), key=lambda p: p.stat().st_mtime, reverse=True)
    removed = images[keep:]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def _mode(path: Path) -> int:
    return 0o755 if path.stat().st_mode & 0o111 else 0o644


def _file_digest(path: Path) -> bytes:
    with path.open("rb") as source:
        return hashlib.file_digest(source, "sha256").digest()


def _venv() -> str:
    return os.environ.get("VIRTUAL_ENV") or "the running Python environment"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


class _Steps:
    """Progress lines prefixed with the elapsed time since ``started``."""

    def __init__(self, progress: Progress, started: float) -> None:
        self._progress = progress
        self._started = started

    def __call__(self, message: str) -> None:
        self._progress(f"[{time.monotonic() - self._started:6.1f} s] {message}")

    def sub(self, message: str) -> None:
        self(f"  {message}")


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _tree_size(root: Path) -> int:
    """Bytes allocated by a tree (each inode once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            st = os.lstat(os.path.join(dirpath, name))
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += max(st.st_blocks * 512, 0) or 4096
    return total


def _describe_size(image: Path) -> str:
    st = image.stat()
    return f"{st.st_size >> 20} MiB, {st.st_blocks * 512 / 1e6:.0f} MB allocated"
