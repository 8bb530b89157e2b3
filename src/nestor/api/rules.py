"""The rules of the API's inputs, as the OpenAPI document states them (issue 18: the document is
the contract). Each is made from the regular expression or bound the service itself checks with
(model.NAME_RE, audit's --since forms, ...), so the document and the server cannot drift apart.
Patterns are anchored (JSON Schema's `pattern` matches anywhere); standard library only.
"""

from __future__ import annotations

from typing import Any

from ..model import MAX_APPEND, NAME_RE
from ..service.audit import SINCE_RE

MiB = 1 << 20


def anchored(pattern: str) -> str:
    return f"^(?:{pattern})$"


NAME = anchored(NAME_RE.pattern)  # validate_name: VMs, switches, NATs, disks, checkpoints, adapters, hosts, images
VM_PATH = anchored(f"(?:{NAME_RE.pattern})(?:/(?:{NAME_RE.pattern}))*")  # hypervisor.split_levels, non-empty
LEVEL = anchored(f"(?:(?:{NAME_RE.pattern})(?:/(?:{NAME_RE.pattern}))*)?")  # `at` and check-tree's path: '' is here
OP_ID = anchored("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # runtime: str(uuid.uuid4())
SINCE = anchored(SINCE_RE.pattern)
FILE = anchored("/[^\x00]{0,4095}")  # handlers.api_file: an absolute path (no NUL), in the files directory
TEXT = anchored(f"[ -~]{{0,{MAX_APPEND}}}")  # model.validate_text for a kernel command line: printable ASCII

# Path parameters by name (a route may say otherwise: Table.route(params=...)).
PATH: dict[str, dict[str, Any]] = {
    "name": {"pattern": NAME}, "vm": {"pattern": NAME}, "disk": {"pattern": NAME},
    "checkpoint": {"pattern": NAME}, "target": {"pattern": VM_PATH}, "op_id": {"pattern": OP_ID},
}

# Numbers: the service's own bounds (what the host has, or the accelerator allows, is a 409).
MAX_VCPUS = 1024  # policy/accel: KVM's maximum when the host does not say (TCG allows fewer)
MIN_MEMORY = 32 * MiB  # policy/memory.MIN_SIZE
MAX_MEMORY = 16 << 40  # no host has more; above what this one has: 409
BUFFER = (5, 2000)  # policy/memory.BUFFER_RANGE, percent
MIN_DISK, MAX_DISK = MiB, 16 << 40  # service/disks.check_size
MIN_DEBIAN = 2 << 30  # images/debian.MIN_SIZE
MIN_TIMEOUT, MAX_TIMEOUT = 0.001, 24 * 3600.0  # service/guests.check_timeout: more than 0, at most a day
MAX_ITEMS = 256  # switches of a VM, packages, argv words

# Words.
BUILDS = ["appliance", "nested-host", "debian"]  # bootplan.IMAGES and the debian image
RELEASES = ["bookworm"]  # images/debian.RELEASES
CONFIG_VERSION = anchored(r"7\.0|8\.0|9\.0|10\.0|11\.0")  # model.CONFIG_VERSIONS
PACKAGE = anchored("[a-z0-9][a-z0-9+.-]{1,99}")  # images/debian._PACKAGE_RE
USER = anchored("[a-z_][a-z0-9_-]{0,31}")  # cloudinit._USER_RE (root is refused: 400)
HOSTNAME = anchored(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?){0,3}")
IFNAME = anchored("[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")  # a Linux interface name (IFNAMSIZ)
MAC = anchored("[0-9a-f][02468ace](?::[0-9a-f]{2}){5}")  # net/addresses.validate_mac: unicast, lower case
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
CIDR = anchored(rf"{_OCTET}(?:\.{_OCTET}){{3}}/(?:[0-9]|[12][0-9]|3[0-2])")
BASE64 = anchored("(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
URI_EXAMPLES = "qemu+ssh://root@host-a/system, qemu+tls://host-b/system, test:///default"
UNTIL = anchored(r"[\s\S]+")  # vm log --until: some text to wait for
MAX_LAB = 1 << 20  # lab/file.MAX_FILE: a lab file's text
LABEL = anchored("[^\x00-\x1f\x7f]{0,1024}")  # where a lab file was read (lab/session.label): no control characters
