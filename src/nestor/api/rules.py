"""The rules of the API's inputs, as the OpenAPI document states them (issue 18: the document is
the contract). Each is made from the regular expression or bound the service itself checks with
(model.NAME_RE, audit's --since forms, ...), so the document and the server cannot drift apart.
Patterns are anchored (JSON Schema's `pattern` matches anywhere); standard library only.
"""

from __future__ import annotations

from typing import Any

from ..model import MAX_APPEND, NAME_RE
from ..net import patterns as net_patterns
from ..remote import uri as uris
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
MIN_DEBIAN, MAX_DEBIAN = 2 << 30, 2 << 40  # images/debian.MIN_SIZE, MAX_SIZE
MIN_TIMEOUT, MAX_TIMEOUT = 0.001, 24 * 3600.0  # service/guests.check_timeout: more than 0, at most a day
MAX_ITEMS = 256  # switches of a VM, packages, argv words

# Words.
BUILT_IN = ["appliance", "nested-host"]  # bootplan.IMAGES, images/store.BUILT_IN (debian: a route of its own)
RELEASES = ["bookworm"]  # images/debian.RELEASES
CONFIG_VERSION = anchored(r"7\.0|8\.0|9\.0|10\.0|11\.0")  # model.CONFIG_VERSIONS
PACKAGE = anchored("[a-z0-9][a-z0-9+.-]{1,99}")  # images/debian._PACKAGE_RE
USER = anchored("[a-z_][a-z0-9_-]{0,31}")  # cloudinit._USER_RE (root is refused: 400)
HOSTNAME = anchored(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?){0,3}")
IFNAME = anchored("[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")  # a Linux interface name (IFNAMSIZ)
# Exactly what net/addresses.py accepts (net/grammar.py builds them; tests/unit/test_net_grammar.py):
MAC = anchored(net_patterns.MAC)  # validate_mac: unicast, not all zero, not nestor's bridge prefix
CIDR = anchored(net_patterns.CIDR)  # parse_interface + check_host_address: a switch's host address
NAT_PREFIX = anchored(net_patterns.NAT_PREFIX)  # parse_prefix: a NAT's network, /2 to /30
BASE64 = anchored("(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
URI = anchored(uris.GRAMMAR)  # remote/uri.validate: what it accepts (a local socket= aside)
URI_EXAMPLES = "qemu+ssh://root@host-a/system, qemu+tls://host-b/system, test:///default"
UNTIL = anchored(r"[\s\S]+")  # vm log --until: some text to wait for
MAX_LAB = 1 << 20  # lab/file.MAX_FILE: a lab file's text
LABEL = anchored("[^\x00-\x1f\x7f]{0,1024}")  # where a lab file was read (lab/session.label): no control characters


# -- rules that tie fields together (a Body's `combined`, JSON Schema; the service refuses what breaks one)
def _is(value: Any) -> dict[str, Any]:
    return {"type": "null"} if value is None else {"const": value}  # (pydantic drops a None const)


def kept(*fields: str, default: Any = None) -> dict[str, Any]:
    """FIELDS are absent or keep their default (null, false, [], ...)."""
    return {"properties": {f: _is(default) for f in fields}}


def given(field: str, default: Any = None) -> dict[str, Any]:
    """FIELD is present with a value other than its default."""
    return {"required": [field], "properties": {field: {"not": _is(default)}}}


def among(field: str, values: list[Any], default: Any = None) -> dict[str, Any]:
    """FIELD is one of VALUES (absent counts as its default)."""
    named = [v for v in values if v is not None]
    rule: dict[str, Any] = {"properties": {field: {"enum": named} if len(named) == len(values)
                                           else {"anyOf": [{"enum": named}, {"type": "null"}]}}}
    if default not in values:
        rule["required"] = [field]
    return rule


def both(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"allOf": list(rules)} if len(rules) > 1 else rules[0]


def either(*branches: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": list(branches)}


def some(*fields: str) -> dict[str, Any]:
    """At least one of FIELDS has a value (a PATCH: nothing to change is refused)."""
    return either(*(given(f) for f in fields))


ENLIGHTENMENTS = ["hyperv", "off"]  # policy/enlightenments.MODES
