"""Reaching into guests through their agent: `vm exec` (any depth) and `tree` (every level)."""

from __future__ import annotations

import json
import socket
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from . import paths
from .engine import process
from .engine.qmp import Agent
from .errors import GuestError, InvalidInput, StateError
from .model import validate_name

if TYPE_CHECKING:
    from .service import Nestor

EXEC_TIMEOUT = 120.0
TREE_TIMEOUT = 30.0
PING_TIMEOUT = 3.0


def split_target(target: str) -> list[str]:
    """'l1/l2' → ['l1', 'l2']: a VM path through nested nestors."""
    parts = target.split("/")
    for part in parts:
        validate_name(part)
    return parts


def agent(service: Nestor, name: str, timeout: float) -> Agent:
    config = service.vms.get(validate_name(name))
    vm_dir = service.home.vm_dir(config.id)
    if process.live_pid(vm_dir) is None:
        raise StateError(f"vm '{name}' is not running", hint=f"nestor vm start {name}")
    sock = vm_dir / paths.QGA_SOCK
    if not sock.exists():
        raise GuestError(f"vm '{name}' has no guest agent", hint="use the nested-host image, which runs qemu-guest-agent")
    return Agent(sock, name, timeout=timeout)


def vm_exec(service: Nestor, target: str, argv: list[str], timeout: float = EXEC_TIMEOUT) -> tuple[int, bytes, bytes]:
    """Run argv in the VM at `target` ('l1' or 'l1/l2'); deeper levels go through each nestor."""
    if not argv:
        raise InvalidInput("no command given", hint="nestor vm exec NAME -- CMD [ARG...]")
    if timeout <= 0:
        raise InvalidInput(f"timeout must be positive, not {timeout}", hint="e.g. --timeout 60")
    first, *rest = split_target(target)
    if rest:
        inner = max(timeout - 5, 1)
        argv = ["nestor", "vm", "exec", "/".join(rest), "--timeout", f"{inner:g}", "--", *argv]
    with agent(service, first, timeout) as guest:
        guest.ping(timeout=PING_TIMEOUT)
        return guest.exec(argv, timeout=timeout)


@dataclass
class Node:
    name: str
    level: int
    state: str
    vcpus: int
    memory: str
    nested: bool
    hypervisor_running: bool | None = None
    reachable: bool | None = None  # None: not asked (off, or not nested)
    error: str | None = None
    children: list[Node] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], level_offset: int) -> Node:
        children = [cls.from_json(child, level_offset) for child in data.get("children", [])]
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "children"}
        fields["level"] = int(fields.get("level", 1)) + level_offset
        return cls(**fields, children=children)


def tree(service: Nestor, timeout: float = TREE_TIMEOUT) -> dict[str, Any]:
    """This host and every VM below it; a level that does not answer is marked unreachable."""
    nodes = []
    for config in service.vms.all():
        info = service.info(config)
        node = Node(config.name, 1, info.state, config.vcpus, info.memory, config.nested)
        if info.state == "running" and config.nested:
            node.hypervisor_running, _ = service.hypervisor_running(config)
            _descend(service, node, timeout)
        nodes.append(node)
    return {"host": socket.gethostname(), "level": 0, "vms": [n.to_json() for n in nodes]}


def _descend(service: Nestor, node: Node, timeout: float) -> None:
    inner = max(timeout - 5, 2)
    try:
        code, out, err = vm_exec(service, node.name, ["nestor", "tree", "-o", "json", "--timeout", f"{inner:g}"],
                                 timeout=timeout)
        if code != 0:
            raise GuestError(err.decode(errors="replace").strip().splitlines()[-1] if err.strip() else f"exit {code}")
        data = json.loads(out)
    except (GuestError, StateError, ValueError) as exc:
        node.reachable = False
        node.error = getattr(exc, "message", None) or str(exc)
        return
    node.reachable = True
    node.children = [Node.from_json(child, node.level) for child in data.get("vms", [])]
