"""What every cmdlet gets: the Hypervisor of its level and a way to tell the user; and the helpers they share."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import InvalidInput, NotFound
from ..hypervisor import Hypervisor, at
from ..model import validate_name
from ..service import Service
from .objects import PSObject
from .parse import Command

Note = Callable[[str], None]
_VNIC_RE = re.compile(r"^\s*vEthernet\s*\((.+)\)\s*$", re.IGNORECASE)
_WILDCARDS = set("*?[")


@dataclass
class Session:
    """`local` is this host's service; `level` the VM path (Hyper-V's -ComputerName) of the host the
    running command acts on ('' this one), and `service` that level's Hypervisor (opened once)."""

    local: Service
    note: Note
    level: str = ""
    _levels: dict[str, Hypervisor] = field(default_factory=dict)

    @property
    def service(self) -> Hypervisor:
        if not self.level:
            return self.local
        if self.level not in self._levels:
            self._levels[self.level] = at(self.local, self.level)
        return self._levels[self.level]

    def only_here(self, what: str) -> None:
        """Refuse WHAT at a level below (it keeps its data in this host's home)."""
        if self.level:
            raise InvalidInput(f"{what} runs on this host only, not on '{self.level}': nestor ps keeps its data "
                               "in this host's home", hint=f"run it inside the level: nestor vm exec {self.level} "
                               "-- nestor ps -c '...'")

    def close(self) -> None:
        for level in reversed(list(self._levels.values())):
            level.close()
        self._levels.clear()


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
