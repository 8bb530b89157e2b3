"""Which libvirt URIs nestor accepts for `host add`. Pure."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from ..errors import InvalidInput

REMOTE_SCHEMES = ("qemu+ssh", "qemu+tcp", "qemu+tls")
EXAMPLES = "qemu+ssh://root@host-a/system, qemu+tls://host-b/system, test:///default or test:///ABSOLUTE/PATH.xml"


def validate(uri: str) -> str:
    """The URI unchanged if nestor can use it; InvalidInput naming what is wrong otherwise."""
    parts = urlsplit(uri)
    if parts.scheme == "test":
        if parts.netloc:
            raise InvalidInput(f"test URI '{uri}' names a machine; the test driver is in-process",
                               hint="test:///default or test:///ABSOLUTE/PATH.xml")
        if parts.path == "/default":
            return uri
        if not parts.path.endswith(".xml") or not parts.path.startswith("/"):
            raise InvalidInput(f"test URI '{uri}' must be test:///default or an absolute path to a .xml file",
                               hint="e.g. test:///var/lib/nestor/sim/host-a.xml")
        if not Path(parts.path).is_file():
            raise InvalidInput(f"test URI '{uri}': no such file {parts.path}", hint="write the <node> XML first")
        return uri
    if parts.scheme in REMOTE_SCHEMES:
        if not parts.hostname:
            raise InvalidInput(f"libvirt URI '{uri}' has no host name", hint=f"e.g. {parts.scheme}://HOST/system")
        if parts.path not in ("/system", "/session"):
            raise InvalidInput(f"libvirt URI '{uri}' must end in /system (or /session)",
                               hint=f"e.g. {parts.scheme}://{parts.netloc}/system")
        return uri
    if parts.scheme == "qemu" and parts.path in ("/system", "/session") and not parts.netloc:
        return uri  # this machine's own libvirtd
    raise InvalidInput(f"unsupported libvirt URI '{uri}'", hint=f"use one of: {EXAMPLES}")


def test_file(uri: str) -> Path | None:
    """The <node> file of a test:///PATH.xml URI (None for every other URI)."""
    parts = urlsplit(uri)
    if parts.scheme == "test" and parts.path != "/default":
        return Path(parts.path)
    return None
