"""What every cmdlet gets: the service and a way to tell the user; and the helpers they share."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import NotFound
from ..model import validate_name
from ..service import Service
from .objects import PSObject
from .parse import Command

Note = Callable[[str], None]
_VNIC_RE = re.compile(r"^\s*vEthernet\s*\((.+)\)\s*$", re.IGNORECASE)
_WILDCARDS = set("*?[")


@dataclass
class Session:
    service: Service
    note: Note


def vnic_switch(alias: str, where: str = "") -> str:
    """'vEthernet (VmNat)' -> 'vmnat': the switch whose host adapter Windows names so."""
    match = _VNIC_RE.match(alias)
    if not match:
        raise NotFound(f"'{alias}' is not an adapter nestor ps knows{where}: nestor manages only the host's "
                       "adapters on its switches, named 'vEthernet (SWITCH)'",
                       hint="nestor switch list shows the switches; the host's own interfaces are not nestor's")
    return validate_name(match.group(1).strip().lower(), "switch")


def targets(cmd: Command, obj: PSObject | None, param: str = "Name") -> list[str]:
    """The VMs a VM cmdlet acts on: its name parameter, or the pipeline object's VM."""
    if obj is None:
        return [cmd.args[param]]
    return [obj.props["VMName"] if "VMName" in obj.props else obj.props["Name"]]


def is_pattern(value: str) -> bool:
    return bool(_WILDCARDS & set(value))
