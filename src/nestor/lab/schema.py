"""The lab file's JSON Schema (published as docs/lab.schema.json; a unit test keeps them equal)."""

from __future__ import annotations

import json
from typing import Any

NAME = {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$"}
SIZE = {"type": ["string", "integer"], "description": "512M, 1G, 1024 (MiB)"}

SWITCH: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type"],
    "properties": {
        "type": {"enum": ["internal", "private"]},
        "address": {"type": "string", "description": "the level's address on the switch, ADDR/PREFIX (internal)"},
    },
}

NAT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["switch", "prefix"],
    "properties": {
        "switch": NAME,
        "prefix": {"type": "string", "description": "the network masqueraded, CIDR"},
        "dhcp": {"type": "boolean"},
    },
}

ADAPTER: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["switch"],
    "properties": {
        "switch": NAME,
        "mac": {"type": "string"},
        "mac_spoofing": {"type": "boolean", "description": "the seed's MAC address spoofing (off: the MAC guard)"},
        "ip": {"type": "string", "description": "the guest's static ADDR/PREFIX (first adapter only)"},
        "gateway": {"type": "string"},
        "dhcp": {"type": "boolean", "description": "the guest asks a NAT's dnsmasq for its address"},
    },
}

DYNAMIC: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"minimum": SIZE, "maximum": SIZE, "buffer": {"type": "integer", "minimum": 5, "maximum": 2000}},
}

VM: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "image": {"type": "string", "description": "appliance, nested-host, or an image the level has"},
        "cpus": {"type": "integer", "minimum": 1},
        "memory": SIZE,
        "dynamic_memory": DYNAMIC,
        "nested": {"type": "boolean", "description": "the seed's ExposeVirtualizationExtensions"},
        "adapters": {"type": "array", "items": ADAPTER},
        "run": {"type": "string", "description": "appliance: a script the guest runs once up (its text)"},
        "ssh_keys": {"type": "array", "items": {"type": "string"},
                     "description": "a disk-image guest: public key lines, the cloud-init user's authorized keys"},
        "cloud_init": {"type": "string",
                       "description": "a disk-image guest: its cloud-init user-data (#cloud-config …), as vm new --cloud-init"},
        "host": {"type": "string", "description": "a registered libvirt host, or auto (L0 VMs only)"},
        "switches": {"$ref": "#/$defs/switches"},
        "nats": {"$ref": "#/$defs/nats"},
        "vms": {"$ref": "#/$defs/vms"},
    },
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://nestor.invalid/lab.schema.json",
    "title": "nestor lab",
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": NAME,
        "switches": {"$ref": "#/$defs/switches"},
        "nats": {"$ref": "#/$defs/nats"},
        "vms": {"$ref": "#/$defs/vms"},
    },
    "$defs": {
        "switches": {"type": "object", "propertyNames": NAME, "additionalProperties": SWITCH},
        "nats": {"type": "object", "propertyNames": NAME, "additionalProperties": NAT},
        "vms": {"type": "object", "propertyNames": NAME, "additionalProperties": VM},
    },
}


def rendered() -> str:
    """docs/lab.schema.json's text."""
    return json.dumps(SCHEMA, indent=2) + "\n"
