"""The kernel: the Debian cloud kernel, extracted, as every built-in image boots it.

``build_kernel`` downloads ``linux-image-<version>-cloud-amd64`` (the real package behind the
``linux-image-cloud-amd64`` metapackage), extracts it, turns the LZ4-compressed ``vmlinuz`` into
an ELF ``vmlinux`` (PVH boot on ``-M microvm``) and keeps ``lib/modules/<version>`` with a fresh
``modules.dep``. The module helpers pick modules (with their dependencies) for an initramfs
(``copy_modules``) or a root filesystem (``install_modules``).

Layout under ``images_dir``: ``kernel/manifest.json  kernel/vmlinux  kernel/config
kernel/lib/modules/<version>/...``, built beside its place and renamed into it.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import struct
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from nestor.errors import ImageError

from . import packages, publish
from .ext4 import link_or_copy
from .steps import Progress

FORMAT = 1
_TIMEOUT_QUICK = 120


KERNEL_DIR = "kernel"
VMLINUX = "vmlinux"
LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
ELF_MAGIC = b"\x7fELF"


@dataclass(frozen=True)
class KernelImage:
    """The Debian cloud kernel, extracted."""

    version: str  # e.g. "6.1.0-28-cloud-amd64"
    vmlinux: Path  # uncompressed ELF, boots via PVH on -M microvm
    modules_dir: Path  # the extracted lib/modules/<version> tree


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
        package = packages.resolve_kernel_package(progress)
        deb = packages.apt_download(package, stage, progress)
        version = _build_kernel_tree(deb, stage, progress)
        _write_manifest(stage, {"format": FORMAT, "version": version, "package": deb.name})
        publish.publish(stage, images_dir / KERNEL_DIR)
    kernel = load_kernel(images_dir)
    if kernel is None:
        raise ImageError("the kernel image vanished right after it was built")
    progress(f"kernel {kernel.version}: done in {time.monotonic() - started:.1f} s")
    return kernel


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


def _build_kernel_tree(deb: Path, stage: Path, progress: Progress) -> str:
    """Extract ``deb`` and leave vmlinux, config and lib/modules/<version> in ``stage``."""
    progress(f"extracting {deb.name}")
    extracted = stage / "extract"
    packages.dpkg_extract(deb, extracted)
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
        packages.run([depmod, "-b", str(base), version], timeout=_TIMEOUT_QUICK)
    else:
        packages.run(["busybox", "depmod", "-b", str(base), version], timeout=_TIMEOUT_QUICK)
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


def install_modules(kernel: KernelImage, rootfs: Path) -> None:
    """The kernel's whole module tree at ``lib/modules/<version>`` (hard links where possible),
    then depmod for it."""
    dest = rootfs / "lib" / "modules" / kernel.version
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(kernel.modules_dir, dest, symlinks=True, copy_function=link_or_copy)
    run_depmod(rootfs, kernel.version)


def _read_manifest(top: Path) -> dict[str, object] | None:
    data = publish.read_manifest(top)
    return data if data is not None and data.get("format") == FORMAT else None


def _write_manifest(stage: Path, data: dict[str, object]) -> None:
    publish.write_manifest(stage, data)
