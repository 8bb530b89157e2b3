"""The L1 payload: a small read-only ext4 disk mounted at ``/opt/nestor`` in a nested host.

It holds the nestor that runs (the installed distribution: its RECORD's files, or for an editable
install the imported package's), with its metadata (so the guest's nestor is an installed
distribution too), its dependencies copied from the running environment
(byte-compiled with unchecked-hash .pyc: the guest cannot write them and mtimes do not matter), a
``bin/nestor`` wrapper, the appliance image for L2, and the nested-host image's manifest with its
root filesystem named by the guest's read-only disk ``/dev/vdc`` (contract.GUEST_ROOTFS_DISK): a
nested host's nestor makes nested hosts of its own from them. Inside a level that runs nestor
from a payload disk, that disk is the payload for the level below (``running_payload``): the
same nestor, dependencies and images, so nothing is rebuilt or copied down the tree. It is keyed by a content hash
(``images_dir/payload/<hash>.img``, the newest few kept), so every code change gives a new payload
in about a second, without touching the root filesystem.
"""

from __future__ import annotations

import compileall
import hashlib
import importlib.metadata as metadata
import os
import py_compile
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from nestor.errors import ImageError

from .contract import GUEST_HOME, GUEST_PAYLOAD, GUEST_ROOTFS_DISK
from .ext4 import describe_size, link_or_copy, make_ext4, round_mib, tree_size
from .initramfs import APPLIANCE_DIR, INITRD, ApplianceImage, build_appliance
from .kernel import KERNEL_DIR, VMLINUX
from .publish import MANIFEST
from .steps import Progress, Steps

PAYLOAD_DIR = "payload"
PAYLOAD_FORMAT = 2
PAYLOAD_LABEL = "nestor-payload"
PAYLOAD_KEEP = 3
DISTRIBUTION = "nestor"


@dataclass(frozen=True)
class Installed:
    """The nestor that runs, as a distribution: what the payload carries of it."""

    name: str
    version: str
    metadata: str  # its METADATA (Requires-Dist: the dependencies the payload carries)
    files: tuple[tuple[str, Path], ...]  # (path relative to site-packages, path) of its package
    requires: tuple[str, ...] = ()


def installed_nestor() -> Installed:
    """The installed nestor distribution, with the files of the package that is imported.

    A regular install (a wheel, `pip install nestor`, or a payload disk) lists them in its
    RECORD; an editable install's RECORD names only its finder, so the imported package's
    directory gives them (what runs is what is carried)."""
    import nestor

    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError as exc:
        raise ImageError("payload: nestor is not installed as a distribution (no nestor-*.dist-info)",
                         hint="pip install nestor, or pip install -e . in a checkout") from exc
    package = Path(nestor.__file__).resolve().parent
    recorded = [(rel, path) for rel, path in distribution_files(dist) if rel.startswith(f"{package.name}/")]
    if not any(path.resolve() == package / "__init__.py" for _, path in recorded):
        recorded = [(f"{package.name}/{rel}", path) for rel, path in package_files(package)]
    text = dist.read_text("METADATA") or f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: {dist.version}\n"
    return Installed(DISTRIBUTION, dist.version, text, tuple(recorded), tuple(dist.requires or ()))


def running_payload(mounts: str | None = None, package: Path | None = None) -> Path | None:
    """The payload disk this nestor runs from (inside a nested host), or None.

    It is the payload for the level below as it is: it was built from this very nestor."""
    if package is None:
        import nestor

        package = Path(nestor.__file__).resolve().parent
    if package != Path(GUEST_PAYLOAD) / "lib" / "nestor":
        return None
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == GUEST_PAYLOAD and fields[0].startswith("/dev/") \
                and "ro" in fields[3].split(","):
            return Path(fields[0])
    return None


def build_payload(images_dir: Path, progress: Progress, installed: Installed | None = None) -> Path:
    """The payload disk for a nested host (nestor, its dependencies, the images), built if needed.

    ``installed`` is the nestor to carry (default: the one that runs, ``installed_nestor``);
    inside a level that runs from a payload disk, that disk is returned. The image is
    ``images_dir/payload/<hash>.img``, keyed by the content of everything it holds.
    """
    started = time.monotonic()
    if installed is None:
        running = running_payload()
        if running is not None:
            progress(f"payload: this level's own payload disk ({running})")
            return running
        installed = installed_nestor()
    appliance = build_appliance(images_dir, progress)
    entries = payload_entries(installed, appliance, images_dir)
    digest = payload_hash(entries)
    top = images_dir / PAYLOAD_DIR
    image = top / f"{digest[:24]}.img"
    if image.is_file():
        os.utime(image)  # most recently used: pruning keeps it
        progress(f"payload: cached ({image.name}, {time.monotonic() - started:.2f} s)")
        return image
    step = Steps(progress, started)
    step(f"payload: building from {installed.name} {installed.version} ({len(entries)} files)")
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
        used = tree_size(tree)
        size = payload_image_size(used)
        step(f"payload: mkfs.ext4 -d ({used / 1e6:.1f} MB used, image {size >> 20} MiB)")
        staged = Path(tmp) / image.name
        make_ext4(tree, staged, size, PAYLOAD_LABEL, journal=False)
        os.replace(staged, image)
    pruned = prune_payloads(top, keep=PAYLOAD_KEEP)
    if pruned:
        step(f"payload: removed {len(pruned)} older payload(s)")
    step(f"payload: done ({image.name}, {describe_size(image)})")
    return image


def payload_image_size(used: int) -> int:
    """Content plus 20 % (and a little for ext4's own metadata), in whole MiB."""
    return round_mib(int(used * 1.2) + (8 << 20))


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
    """One file of the payload: from ``source`` (a file), ``text`` (generated) or a symbolic
    ``link`` (to a guest path)."""

    dest: str  # relative to the payload root
    source: Path | None = None
    text: str | None = None
    mode: int = 0o644
    link: str | None = None


def payload_entries(installed: Installed, appliance: ApplianceImage, images_dir: Path | None = None) -> list[Entry]:
    """Everything the payload holds, sorted by destination."""
    if not any(rel.endswith("/__init__.py") and rel.count("/") == 1 for rel, _ in installed.files):
        raise ImageError(f"payload: {installed.name} {installed.version} has no package files (no __init__.py)",
                         hint="reinstall it: pip install --force-reinstall nestor")
    entries = [Entry("bin/nestor", text=wrapper_script(), mode=0o755)]
    entries += [Entry(f"lib/{rel}", source=path, mode=_mode(path)) for rel, path in installed.files]
    entries += distribution_entries(installed)
    roots = [name for name, marker in map(parse_requirement, installed.requires) if name and "extra" not in marker]
    for dist in dependency_closure(roots):
        entries += [Entry(f"lib/{rel}", source=path, mode=_mode(path))
                    for rel, path in distribution_files(dist)]
    entries += appliance_entries(appliance)
    if images_dir is not None:
        entries += nested_host_entries(images_dir)
    by_dest = {entry.dest: entry for entry in entries}
    return [by_dest[dest] for dest in sorted(by_dest)]


def distribution_entries(installed: Installed) -> list[Entry]:
    """``lib/NAME-VERSION.dist-info``: the guest's nestor is an installed distribution, whose
    RECORD lists the payload's package files (a nested host builds its own payloads from it)."""
    info = f"{normalize(installed.name).replace('-', '_')}-{installed.version}.dist-info"
    names = [rel for rel, _ in installed.files] + [f"{info}/{name}" for name in ("INSTALLER", "METADATA", "RECORD")]
    return [Entry(f"lib/{info}/INSTALLER", text="nestor-payload\n"),
            Entry(f"lib/{info}/METADATA", text=installed.metadata),
            Entry(f"lib/{info}/RECORD", text="".join(f"{name},,\n" for name in sorted(names)))]


def nested_host_entries(images_dir: Path) -> list[Entry]:
    """The nested-host image as a nested host sees it: its manifest, and its root filesystem
    as the guest's read-only disk GUEST_ROOTFS_DISK (bootplan gives the pristine rootfs there).
    Nothing if the image is not built."""
    from .rootfs import NESTED_HOST_DIR, load_nested_host

    host = load_nested_host(images_dir)
    if host is None:
        return []
    top = f"images/{NESTED_HOST_DIR}"
    return [Entry(f"{top}/{MANIFEST}", source=host.rootfs.parent / MANIFEST),
            Entry(f"{top}/{host.rootfs.name}", link=GUEST_ROOTFS_DISK)]


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
                                 hint=f"pip install {name}") from exc
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
        if entry.link is not None:
            digest.update(f"link\0{entry.link}".encode())
        elif entry.text is not None:
            digest.update(hashlib.sha256(entry.text.encode()).digest())
        elif entry.source is not None:
            digest.update(_file_digest(entry.source))
    return digest.hexdigest()


def populate_payload(tree: Path, entries: Iterable[Entry]) -> None:
    for entry in entries:
        dest = tree / entry.dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        if entry.link is not None:
            os.symlink(entry.link, dest)
            continue
        if entry.text is not None:
            dest.write_text(entry.text)
        elif entry.source is not None:
            link_or_copy(str(entry.source), str(dest))
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
