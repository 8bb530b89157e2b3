"""The appliance image: a Debian cloud kernel plus a small busybox initramfs.

Everything comes from Debian packages fetched with ``apt-get download``:

* ``build_kernel`` downloads ``linux-image-<version>-cloud-amd64`` (the real package behind the
  ``linux-image-cloud-amd64`` metapackage), extracts it, turns the LZ4-compressed ``vmlinuz``
  into an ELF ``vmlinux`` (PVH boot on ``-M microvm``) and keeps ``lib/modules/<version>`` with a
  fresh ``modules.dep``.
* ``build_appliance`` packs busybox (static), the init script ``appliance_init.sh`` and the
  kernel modules an appliance needs into an uncompressed newc cpio.
* ``make_run_cpio`` makes the per-VM cpio carrying the user's script as ``/nestor/run.sh``; it is
  concatenated after the appliance initrd.

Layout under ``images_dir``::

    kernel/manifest.json  kernel/vmlinux  kernel/config  kernel/lib/modules/<version>/...
    appliance/manifest.json  appliance/initrd.img

Both directories are built next to their final place and renamed into it, so an interrupted
build leaves nothing half-made.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from nestor.errors import ImageError

from . import publish
from .cpio import NewcWriter, write_newc

BOOT_LINE = "nestor-appliance: userspace up"

KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"
KERNEL_DIR = "kernel"
APPLIANCE_DIR = "appliance"
VMLINUX = "vmlinux"
INITRD = "initrd.img"
FORMAT = 1

LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
ELF_MAGIC = b"\x7fELF"

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

Progress = Callable[[str], None]

_TIMEOUT_QUICK = 120
_TIMEOUT_APT_UPDATE = 600
_TIMEOUT_DOWNLOAD = 900


@dataclass(frozen=True)
class KernelImage:
    """The Debian cloud kernel, extracted."""

    version: str  # e.g. "6.1.0-28-cloud-amd64"
    vmlinux: Path  # uncompressed ELF, boots via PVH on -M microvm
    modules_dir: Path  # the extracted lib/modules/<version> tree


@dataclass(frozen=True)
class ApplianceImage:
    kernel: KernelImage
    initrd: Path  # busybox initramfs (uncompressed newc cpio)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def build_kernel(images_dir: Path, progress: Progress, force: bool = False) -> KernelImage:
    """Download and extract the Debian cloud kernel into ``images_dir/kernel`` (cached)."""
    if not force:
        cached = load_kernel(images_dir)
        if cached is not None:
            progress(f"kernel {cached.version}: cached")
            return cached
    started = time.monotonic()
    images_dir.mkdir(parents=True, exist_ok=True)
    with publish.Staging(images_dir, KERNEL_DIR) as stage:
        package = resolve_kernel_package(progress)
        deb = apt_download(package, stage, progress)
        version = _build_kernel_tree(deb, stage, progress)
        _write_manifest(stage, {"format": FORMAT, "version": version, "package": deb.name})
        publish.publish(stage, images_dir / KERNEL_DIR)
    kernel = load_kernel(images_dir)
    if kernel is None:
        raise ImageError("the kernel image vanished right after it was built")
    progress(f"kernel {kernel.version}: done in {time.monotonic() - started:.1f} s")
    return kernel


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


def load_kernel(images_dir: Path) -> KernelImage | None:
    """The cached kernel, or None if it is not (completely) built."""
    top = images_dir / KERNEL_DIR
    manifest = _read_manifest(top)
    if manifest is None:
        return None
    version = manifest.get("version")
    if not isinstance(version, str) or not version:
        return None
    kernel = KernelImage(
        version=version,
        vmlinux=top / VMLINUX,
        modules_dir=top / "lib" / "modules" / version,
    )
    if not kernel.vmlinux.is_file() or not (kernel.modules_dir / "modules.dep").is_file():
        return None
    return kernel


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
    writer.directory("nestor", 0o755)
    writer.file("nestor/run.sh", data, 0o755)
    write_private(out, writer.finish())  # a copy of a user's file, possibly a secret: 0600


def cmdline_params(
    *,
    hostname: str | None = None,
    ip: str | None = None,
    gw: str | None = None,
    dns: str | None = None,
    dhcp: bool = False,
    root: str | None = None,
) -> list[str]:
    """The ``nestor.*`` kernel parameters the appliance init understands.

    ``ip`` is ``ADDR/PREFIX`` and wins over ``dhcp``; ``root`` (``/dev/vdX``) makes the init
    switch_root to that ext4 disk instead of acting as an appliance.
    """
    params: list[str] = []
    for key, value in (("hostname", hostname), ("ip", ip), ("gw", gw), ("dns", dns), ("root", root)):
        if value is None:
            continue
        if not value or any(c.isspace() for c in value) or '"' in value:
            raise ValueError(f"nestor.{key}: invalid value {value!r}")
        params.append(f"nestor.{key}={value}")
    if ip is not None and "/" not in ip:
        raise ValueError(f"nestor.ip: {ip!r} lacks a /PREFIX")
    if dhcp and ip is None:
        params.append("nestor.dhcp=1")
    return params


# --------------------------------------------------------------------------------------------
# Subprocesses and apt
# --------------------------------------------------------------------------------------------


def _run(argv: Sequence[str], timeout: float, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise ImageError(f"{argv[0]} is not installed", hint=f"install the package that provides {argv[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageError(f"{' '.join(argv)} timed out after {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        detail = _last_line(proc.stderr) or _last_line(proc.stdout)
        raise ImageError(f"{' '.join(argv)} failed (exit {proc.returncode}): {detail}")
    return proc


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _apt_options() -> list[str]:
    # As root apt drops to the _apt user to download, which cannot write our temp dir.
    return ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []


def parse_depends(apt_cache_output: str, prefix: str = "linux-image-") -> str | None:
    """The first ``Depends:`` target starting with ``prefix`` in ``apt-cache depends`` output."""
    for line in apt_cache_output.splitlines():
        match = re.match(r"\s*\|?Depends:\s*(\S+)", line)
        if match and match.group(1).startswith(prefix):
            return match.group(1)
    return None


def _apt_update(progress: Progress) -> None:
    progress("apt lists are missing or stale: running apt-get update")
    _run(["apt-get", "update"], timeout=_TIMEOUT_APT_UPDATE)


def resolve_kernel_package(progress: Progress) -> str:
    """The real package behind ``linux-image-cloud-amd64``, e.g. linux-image-6.1.0-28-cloud-amd64."""
    progress(f"resolving {KERNEL_METAPACKAGE}")
    for attempt in range(2):
        proc = _run(["apt-cache", "depends", KERNEL_METAPACKAGE], timeout=_TIMEOUT_QUICK, check=False)
        package = parse_depends(proc.stdout) if proc.returncode == 0 else None
        if package is not None:
            return package
        if attempt == 0:
            _apt_update(progress)
    raise ImageError(
        f"cannot resolve package {KERNEL_METAPACKAGE}", hint="check the apt sources (Debian main) and run apt-get update"
    )


def apt_download(package: str, dest: Path, progress: Progress) -> Path:
    """``apt-get download package`` into ``dest``; returns the .deb (apt-get update once if needed)."""
    progress(f"downloading {package}")
    argv = ["apt-get", "download", *_apt_options(), package]
    proc = _run(argv, timeout=_TIMEOUT_DOWNLOAD, cwd=dest, check=False)
    if proc.returncode != 0:
        _apt_update(progress)
        proc = _run(argv, timeout=_TIMEOUT_DOWNLOAD, cwd=dest, check=False)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not debs:
        raise ImageError(
            f"cannot download package {package}: {_last_line(proc.stderr)}", hint="check the apt sources and run apt-get update"
        )
    return debs[0]


def _dpkg_extract(deb: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    _run(["dpkg-deb", "-x", str(deb), str(dest)], timeout=_TIMEOUT_QUICK)


# --------------------------------------------------------------------------------------------
# Kernel
# --------------------------------------------------------------------------------------------


def _build_kernel_tree(deb: Path, stage: Path, progress: Progress) -> str:
    """Extract ``deb`` and leave vmlinux, config and lib/modules/<version> in ``stage``."""
    progress(f"extracting {deb.name}")
    extracted = stage / "extract"
    _dpkg_extract(deb, extracted)
    deb.unlink()
    vmlinuz = _single(sorted((extracted / "boot").glob("vmlinuz-*")), "vmlinuz", deb.name)
    version = vmlinuz.name.removeprefix("vmlinuz-")
    progress(f"decompressing {vmlinuz.name} (LZ4)")
    decompress_vmlinuz(vmlinuz, stage / VMLINUX)
    config = extracted / "boot" / f"config-{version}"
    if config.is_file():
        shutil.copy2(config, stage / "config")
    modules = _modules_root(extracted) / version
    if not modules.is_dir():
        raise ImageError(f"{deb.name} has no lib/modules/{version}")
    (stage / "lib" / "modules").mkdir(parents=True)
    modules.rename(stage / "lib" / "modules" / version)
    shutil.rmtree(extracted)
    progress(f"generating modules.dep for {version}")
    run_depmod(stage, version)
    return version


def _single(paths: list[Path], what: str, where: str) -> Path:
    if len(paths) != 1:
        raise ImageError(f"expected one {what} in {where}, found {len(paths)}")
    return paths[0]


def _modules_root(extracted: Path) -> Path:
    for candidate in (extracted / "lib" / "modules", extracted / "usr" / "lib" / "modules"):
        if candidate.is_dir():
            return candidate
    return extracted / "lib" / "modules"


def run_depmod(base: Path, version: str) -> None:
    """Generate modules.dep (and friends) for ``base/lib/modules/<version>``."""
    depmod = shutil.which("depmod") or next((p for p in ("/sbin/depmod", "/usr/sbin/depmod") if Path(p).exists()), None)
    if depmod is not None:
        _run([depmod, "-b", str(base), version], timeout=_TIMEOUT_QUICK)
    else:
        _run(["busybox", "depmod", "-b", str(base), version], timeout=_TIMEOUT_QUICK)
    if not (base / "lib" / "modules" / version / "modules.dep").is_file():
        raise ImageError(f"depmod wrote no modules.dep for {version}")


def find_lz4_payloads(data: bytes) -> Iterator[int]:
    """Offsets of the legacy LZ4 frame magic in ``data``, first first."""
    start = data.find(LZ4_LEGACY_MAGIC)
    while start != -1:
        yield start
        start = data.find(LZ4_LEGACY_MAGIC, start + 1)


def decompress_vmlinuz(vmlinuz: Path, out: Path) -> None:
    """Turn an LZ4-compressed bzImage into the ELF vmlinux it carries."""
    data = vmlinuz.read_bytes()
    for offset in find_lz4_payloads(data):
        if lz4_decompress_to(data[offset:], out) and elf_is_complete(out):
            return
    out.unlink(missing_ok=True)
    raise ImageError(
        f"no LZ4-compressed ELF kernel found in {vmlinuz.name}", hint="the kernel package may use another compression"
    )


def lz4_decompress_to(payload: bytes, out: Path) -> bool:
    """``lz4 -dc`` of payload into ``out``; True if the output starts like an ELF file.

    The bzImage has bytes after the LZ4 stream, so lz4 may exit non-zero; the result is judged
    by its content, not by the exit status.
    """
    try:
        with out.open("wb") as sink:
            subprocess.run(
                ["lz4", "-dc"], input=payload, stdout=sink, stderr=subprocess.DEVNULL, timeout=_TIMEOUT_QUICK, check=False
            )
    except FileNotFoundError as exc:
        raise ImageError("lz4 is not installed", hint="apt-get install lz4") from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageError("lz4 timed out decompressing the kernel") from exc
    with out.open("rb") as source:
        return source.read(4) == ELF_MAGIC


def _elf_program_headers(data: bytes) -> list[tuple[int, int, int]]:
    """(p_type, p_offset, p_filesz) of a 64-bit little-endian ELF; [] if it is not one."""
    if len(data) < 64 or data[:4] != ELF_MAGIC or data[4] != 2 or data[5] != 1:
        return []
    (phoff,) = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    headers = []
    for i in range(phnum):
        at = phoff + i * phentsize
        if at + 56 > len(data):
            return []
        p_type, _flags, p_offset = struct.unpack_from("<IIQ", data, at)
        (p_filesz,) = struct.unpack_from("<Q", data, at + 32)
        headers.append((p_type, p_offset, p_filesz))
    return headers


def elf_is_complete(path: Path) -> bool:
    """A 64-bit ELF whose loadable segments all lie inside the file (not truncated)."""
    data = path.read_bytes()
    headers = _elf_program_headers(data)
    if not headers:
        return False
    return all(offset + size <= len(data) for _t, offset, size in headers)


def elf_is_static(path: Path) -> bool:
    """A 64-bit ELF executable without a PT_INTERP (dynamic loader) segment."""
    headers = _elf_program_headers(path.read_bytes())
    return bool(headers) and all(p_type != 3 for p_type, _o, _s in headers)


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


def module_name(relpath: str) -> str:
    """``kernel/arch/x86/kvm/kvm-amd.ko.xz`` -> ``kvm_amd``."""
    base = relpath.rsplit("/", 1)[-1]
    base = re.sub(r"\.ko(\.(xz|zst|gz))?$", "", base)
    return base.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """modules.dep as {relpath: [dependency relpaths]}."""
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        module, _, rest = line.partition(":")
        deps[module.strip()] = rest.split()
    return deps


def resolve_modules(deps: dict[str, list[str]], patterns: Iterable[str]) -> list[str]:
    """The relpaths of the modules matching ``patterns`` plus all their dependencies."""
    by_name = {module_name(path): path for path in deps}
    wanted = [
        path for name, path in sorted(by_name.items()) if any(fnmatch.fnmatchcase(name, p.replace("-", "_")) for p in patterns)
    ]
    chosen: dict[str, None] = {}
    todo = list(wanted)
    while todo:
        path = todo.pop()
        if path in chosen:
            continue
        chosen[path] = None
        todo.extend(deps.get(path, []))
    return sorted(chosen)


def _decompress_module(source: Path, dest: Path) -> None:
    """Copy a module, decompressing .ko.xz/.ko.zst/.ko.gz (busybox modprobe wants plain .ko)."""
    suffix = source.suffix
    if suffix == ".ko":
        shutil.copyfile(source, dest)
        return
    tool = {".xz": ["xz", "-dc"], ".zst": ["zstd", "-dc"], ".gz": ["gzip", "-dc"]}.get(suffix)
    if tool is None:
        raise ImageError(f"unknown module compression: {source.name}")
    with dest.open("wb") as sink:
        try:
            proc = subprocess.run([*tool, str(source)], stdout=sink, stderr=subprocess.PIPE, timeout=_TIMEOUT_QUICK, check=False)
        except FileNotFoundError as exc:
            raise ImageError(f"{tool[0]} is not installed (needed for {source.name})") from exc
    if proc.returncode != 0:
        raise ImageError(f"cannot decompress {source.name}: {proc.stderr.decode(errors='replace')}")


def _plain_relpath(relpath: str) -> str:
    return re.sub(r"\.ko\.(xz|zst|gz)$", ".ko", relpath)


def copy_modules(kernel: KernelImage, dest_modules: Path, patterns: Iterable[str]) -> list[str]:
    """Copy the matching modules (with dependencies, decompressed) into ``dest_modules``
    (a lib/modules/<version> dir) and write a modules.dep for busybox modprobe."""
    deps = parse_modules_dep((kernel.modules_dir / "modules.dep").read_text())
    chosen = resolve_modules(deps, patterns)
    for relpath in chosen:
        target = dest_modules / _plain_relpath(relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        _decompress_module(kernel.modules_dir / relpath, target)
    lines = [f"{_plain_relpath(m)}: {' '.join(_plain_relpath(d) for d in deps[m])}".rstrip() for m in chosen]
    (dest_modules / "modules.dep").write_text("\n".join(lines) + "\n")
    for extra in ("modules.builtin", "modules.order"):
        if (kernel.modules_dir / extra).is_file():
            shutil.copyfile(kernel.modules_dir / extra, dest_modules / extra)
    _write_filtered_aliases(kernel.modules_dir, dest_modules, {module_name(m) for m in chosen})
    return chosen


def _write_filtered_aliases(src: Path, dest: Path, names: set[str]) -> None:
    """modules.alias restricted to the copied modules (lets the kernel autoload nft_* etc.)."""
    alias_file = src / "modules.alias"
    if not alias_file.is_file():
        return
    kept = [
        line
        for line in alias_file.read_text().splitlines()
        if line.startswith("alias ") and line.split()[-1].replace("-", "_") in names
    ]
    (dest / "modules.alias").write_text("\n".join(kept) + "\n")


# --------------------------------------------------------------------------------------------
# Busybox and the initramfs tree
# --------------------------------------------------------------------------------------------


def find_static_busybox(workdir: Path, progress: Progress) -> Path:
    """A static busybox: the host's (busybox-static) or one from ``apt-get download``."""
    for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if candidate.is_file() and elf_is_static(candidate):
            return candidate
    fetch = workdir / "busybox-deb"
    fetch.mkdir()
    deb = apt_download(BUSYBOX_PACKAGE, fetch, progress)
    _dpkg_extract(deb, fetch / "root")
    for candidate in (fetch / "root" / "bin" / "busybox", fetch / "root" / "usr" / "bin" / "busybox"):
        if candidate.is_file() and elf_is_static(candidate):
            return candidate
    raise ImageError(f"{BUSYBOX_PACKAGE} holds no static busybox")


def busybox_applets(busybox: Path) -> list[str]:
    """Install paths of the applets (``usr/bin/awk``, ``sbin/init`` ...)."""
    proc = _run([str(busybox), "--list-full"], timeout=_TIMEOUT_QUICK)
    return [line.strip().lstrip("/") for line in proc.stdout.splitlines() if line.strip()]


def init_script() -> str:
    return (Path(__file__).parent / "appliance_init.sh").read_text()


def appliance_recipe() -> str:
    """A digest of everything that shapes the initramfs, so a cached one from older code is rebuilt."""
    parts = [str(FORMAT), init_script(), INITTAB, UDHCPC_SCRIPT, POWER_BUTTON_SCRIPT, PROFILE, *APPLIANCE_MODULES]
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
