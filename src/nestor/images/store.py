"""The image store: named qcow2 disk images that VMs boot from (``images/store/NAME/``).

Each image is a directory with ``disk.qcow2`` and ``manifest.json`` (its source: ``debian`` or
``import``, and what it was made from). A VM never writes to an image: it gets a copy-on-write
overlay on it (:mod:`nestor.disks`), so an image that a VM uses is never replaced or removed.

``image import`` takes qcow2 or raw only. A file is inspected with ``qemu-img info
--output=json`` before QEMU opens it as a disk, and refused (:func:`verdict`) when it names a
backing file or an external data file (either would let an image read any host file), when
its format is not one of those two, or when its virtual size is 0 or absurd.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestor.errors import Conflict, ImageError, InvalidInput, NotFound
from nestor.model import validate_name

from ..engine import qemu_img
from . import publish

STORE_DIR = "store"
DISK = "disk.qcow2"
BUILT_IN = ("appliance", "nested-host")
IMPORT_FORMATS = ("qcow2", "raw")
MAX_VIRTUAL_SIZE = 16 << 40  # 16 TiB
_TIMEOUT_INFO = 60
_TIMEOUT_CONVERT = 3600


@dataclass(frozen=True)
class StoredImage:
    name: str
    path: Path  # the qcow2 file
    source: str  # "debian" | "import"
    inputs: str | None  # the Debian build's inputs hash
    manifest: dict[str, Any]


def store_dir(images_dir: Path) -> Path:
    return images_dir / STORE_DIR


def validate_image_name(name: str) -> str:
    validate_name(name, "image")
    if name in BUILT_IN:
        raise InvalidInput(f"image name '{name}' is reserved for nestor's built-in image",
                           hint="choose another name with --name")
    return name


def find(images_dir: Path, name: str) -> StoredImage | None:
    top = store_dir(images_dir) / name
    manifest = publish.read_manifest(top)
    path = top / DISK
    if manifest is None or not path.is_file():
        return None
    inputs = manifest.get("inputs")
    return StoredImage(name=name, path=path, source=str(manifest.get("source", "?")),
                       inputs=inputs if isinstance(inputs, str) else None, manifest=manifest)


def get(images_dir: Path, name: str) -> StoredImage:
    image = find(images_dir, name)
    if image is None:
        raise NotFound(f"image '{name}' not found",
                       hint="nestor image list shows the images; nestor image build debian or image import FILE")
    return image


def all_images(images_dir: Path) -> list[StoredImage]:
    top = store_dir(images_dir)
    if not top.is_dir():
        return []
    found = (find(images_dir, entry.name) for entry in sorted(top.iterdir()) if not entry.name.startswith("."))
    return [image for image in found if image is not None]


def publish_image(images_dir: Path, name: str, out: Path, manifest: dict[str, Any]) -> None:
    """``out`` holds ``disk.qcow2``; it becomes ``store/NAME`` with its manifest, atomically."""
    top = store_dir(images_dir)
    top.mkdir(parents=True, exist_ok=True)
    publish.write_manifest(out, {"name": name, "format": "qcow2", "created": time.time(), **manifest})
    (out / DISK).chmod(0o444)  # the image never changes: VMs have overlays on it
    publish.publish(out, top / name)


def remove(images_dir: Path, name: str, users: list[str]) -> None:
    image = get(images_dir, name)
    if users:
        raise Conflict(f"image '{name}' is used by vm {', '.join(repr(u) for u in users)}",
                       hint="remove those VMs first (nestor vm remove NAME)")
    shutil.rmtree(image.path.parent)


def name_from_file(file: Path) -> str:
    """`image import FILE` without --name: the file name without its extensions, made valid."""
    import re

    stem = file.name.split(".")[0].lower()
    return re.sub(r"[^a-z0-9-]+", "-", stem).strip("-")[:32].strip("-") or "imported"


def describe(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size >> 20} MiB file, {st.st_blocks * 512 / 1e6:.0f} MB allocated"


# --------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------


def qemu_img_info(path: Path, fmt: str | None = None) -> dict[str, Any]:
    """``qemu-img info --output=json`` of one file (never following a backing chain)."""
    argv = ["info", "--output=json"]
    if fmt:
        argv += ["-f", fmt]
    argv.append(str(path))
    user = qemu_img.unprivileged()
    out = qemu_img.run(argv, f"'{path}' is not a disk image qemu-img can read", timeout=_TIMEOUT_INFO,
                       error=ImageError, refused=InvalidInput, hint="give a qcow2 or raw disk image",
                       as_user=user is not None and qemu_img.readable_by(user, path))
    try:
        data = json.loads(out)
    except ValueError as exc:
        raise ImageError(f"qemu-img info {path}: unreadable output") from exc
    if not isinstance(data, dict):
        raise ImageError(f"qemu-img info {path}: unexpected output")
    return data


def verdict(info: dict[str, Any]) -> str | None:
    """Why an image file must not be imported (``qemu-img info`` JSON in), or None. Pure."""
    fmt = info.get("format")
    if fmt not in IMPORT_FORMATS:
        return f"its format is {fmt!r}, not qcow2 or raw" if fmt else "its format cannot be identified"
    if info.get("backing-filename") or info.get("full-backing-filename") or info.get("backing-filename-format"):
        return f"it names a backing file ({info.get('backing-filename') or info.get('full-backing-filename')})"
    specific = info.get("format-specific") or {}
    data = specific.get("data") if isinstance(specific, dict) else None
    if isinstance(data, dict) and (data.get("data-file") or data.get("data-file-raw")):
        return f"it names an external data file ({data.get('data-file')})"
    size = info.get("virtual-size")
    if not isinstance(size, int) or size <= 0:
        return "its virtual size is 0"
    if size > MAX_VIRTUAL_SIZE:
        return f"its virtual size ({size >> 40} TiB) is absurd (more than {MAX_VIRTUAL_SIZE >> 40} TiB)"
    return None


def import_image(images_dir: Path, source: Path, name: str, progress: Any, fmt: str | None = None,
                 force: bool = False) -> StoredImage:
    """`fmt`: the format the caller says the file has (None: qemu-img's probe, which must then find
    qcow2: any file at all probes as raw, so a raw import needs fmt="raw"). `force`: import even if
    its virtual size exceeds the free space of the image store."""
    from .. import files

    validate_image_name(name)
    if fmt is not None and fmt not in IMPORT_FORMATS:
        raise InvalidInput(f"unknown image format '{fmt}'", hint="--format qcow2 or --format raw")
    source = files.regular_file(source, "image file", hint="give an existing qcow2 or raw file")
    if find(images_dir, name) is not None:
        raise Conflict(f"image '{name}' already exists", hint="choose another name with --name")
    # qemu-img probes the format; a raw file is identified as raw only when nothing else matches.
    info = qemu_img_info(source)
    if fmt is None and info.get("format") == "raw":
        raise InvalidInput(f"image file '{source}' has no image format qemu-img knows (any file reads as a raw disk)",
                           hint="if it is a raw disk image, say so: --format raw")
    if fmt is not None and info.get("format") != fmt:
        raise InvalidInput(f"image file '{source}' is {info.get('format')!r}, not {fmt!r}", hint=f"--format {info.get('format')}")
    reason = verdict(info)
    if reason is not None:
        raise InvalidInput(f"image file '{source}' is refused: {reason}",
                           hint="import a self-contained qcow2 or raw image (qemu-img convert -O qcow2 …)")
    existing = next(p for p in (images_dir, *images_dir.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if info["virtual-size"] > free and not force:
        raise InvalidInput(f"image file '{source}' has a virtual size of {info['virtual-size'] >> 30} GiB, more than the "
                           f"{free >> 30} GiB free for the image store ({images_dir})",
                           hint="free space, or import anyway with --force (its disk can then fill the host)")
    with publish.Staging(images_dir, f"import-{name}") as stage:
        out = stage / "out"
        out.mkdir()
        progress(f"converting {info['format']} ({info['virtual-size'] >> 20} MiB) to qcow2")
        started = time.monotonic()
        qemu_img.run(["convert", "-q", "-f", str(info["format"]), "-O", "qcow2", str(source), str(out / DISK)],
                     f"qemu-img convert {source}", timeout=_TIMEOUT_CONVERT, error=ImageError)
        check = verdict(qemu_img_info(out / DISK, "qcow2"))
        if check is not None:
            raise ImageError(f"the converted image is not self-contained: {check}")
        progress(f"converted in {time.monotonic() - started:.1f} s")
        publish_image(images_dir, name, out, {"source": "import", "origin": str(source.resolve()),
                                              "origin_format": info["format"]})
    return get(images_dir, name)
