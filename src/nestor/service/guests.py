"""Reaching into guests: `vm exec` (any depth) and `tree` (every level).

The first level is reached through the guest agent (exec) or, for nested-host guests, through
the guest's own nestor API over its channel (service/channel.py); deeper levels are always
asked through the nestor of the level above, so no nestor CLI is spawned inside a guest.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ..engine.qmp import Agent
from ..errors import GuestError, InvalidInput, NestorError
from ..model import format_size, validate_name
from .core import Core
from .types import ExecResult, Tree, TreeNode

if TYPE_CHECKING:
    from ..client import Client

EXEC_TIMEOUT = 120.0
TREE_TIMEOUT = 30.0
PING_TIMEOUT = 3.0
MAX_TIMEOUT = 24 * 3600.0
MAX_DEPTH = 8  # levels below a host that a tree may report (a guest's answer is not trusted)
MAX_NODES = 4096  # VMs a tree from a guest may hold, at all its levels together


def check_timeout(timeout: float, what: str = "timeout") -> float:
    if not (0 < timeout <= MAX_TIMEOUT):  # also refuses nan
        raise InvalidInput(f"{what} must be between 0 and {MAX_TIMEOUT:.0f} seconds, not {timeout}",
                           hint="e.g. --timeout 60")
    return timeout


def split_target(target: str) -> list[str]:
    """'l1/l2' → ['l1', 'l2']: a VM path through nested nestors."""
    parts = target.split("/")
    for part in parts:
        validate_name(part)
    return parts


def agent(core: Core, name: str, timeout: float) -> Agent:
    files = core.running_files(name)
    if not files.qga_sock.exists():
        raise GuestError(f"vm '{name}' has no guest agent", hint="use the nested-host image, which runs qemu-guest-agent")
    return Agent(files.qga_sock, name, timeout=timeout)


def vm_exec(core: Core, target: str, argv: list[str], timeout: float = EXEC_TIMEOUT) -> ExecResult:
    """Run argv in the VM at `target` ('l1' or 'l1/l2'); deeper levels through each level's API."""
    if not argv:
        raise InvalidInput("no command given", hint="nestor vm exec NAME -- CMD [ARG...]")
    check_timeout(timeout)
    first, *rest = split_target(target)
    if rest:
        from . import channel

        # One deadline for the whole call: the inner exec's timeout, plus the margin each level takes.
        with channel.client(core, first, timeout, deadline=time.monotonic() + timeout + 15) as inner:
            result: ExecResult = inner.vm_exec("/".join(rest), argv, timeout=max(timeout - 5, 1))
        if not (isinstance(result.code, int) and not isinstance(result.code, bool)
                and isinstance(result.stdout, bytes) and isinstance(result.stderr, bytes)):
            raise GuestError(f"vm '{first}': its nestor API sent a malformed exec result",
                             hint=f"the nestor inside '{first}' is not one this nestor understands")
        return result
    with agent(core, first, timeout) as guest:
        guest.ping(timeout=PING_TIMEOUT)
        code, out, err = guest.exec(argv, timeout=timeout)
    return ExecResult(code, out, err)


def tree(core: Core, timeout: float = TREE_TIMEOUT, level: int = 0) -> Tree:
    """This host and every VM below it; a level that does not answer is marked unreachable."""
    check_timeout(timeout)
    from .vms import VMs

    vms = VMs(core)
    nodes = []
    for config in core.vms.all():
        info = vms.info(config)
        node = TreeNode(config.name, level + 1, info.state.value, config.vcpus, format_size(config.memory),
                        config.nested)
        if info.state == "running" and config.nested:
            node.hypervisor_running, _ = core.hypervisor_running(config)
            from . import channel

            def connect(name: str = node.name) -> AbstractContextManager[Client]:
                # One deadline per level: connecting, the sync, the request and the whole answer.
                return channel.client(core, name, timeout, deadline=time.monotonic() + timeout)

            descend(node, connect, timeout)
        nodes.append(node)
    return Tree(socket.gethostname(), level, nodes)


def descend(node: TreeNode, connect: Callable[[], AbstractContextManager[Client]], timeout: float) -> None:
    """Fill `node.children` from the tree of the nestor inside it (its API, reached by `connect`:
    a local VM's channel, or a libvirt VM's through libvirt); unreachable, with why, if it fails."""
    try:
        with connect() as inner:
            below = inner.tree(timeout=max(timeout - 5, 2))
        children = [_rebase(child, node.level, 1) for child in below.vms]
    except NestorError as exc:
        node.reachable = False
        node.error = exc.message
        return
    node.reachable = True
    node.children = children


def _rebase(node: TreeNode, parent_level: int, depth: int) -> TreeNode:
    """A guest's subtree, levels counted from here; too deep a tree is cut (guests are not trusted)."""
    if depth > MAX_DEPTH:
        raise GuestError(f"the tree below is deeper than {MAX_DEPTH} levels")
    node.level = parent_level + 1
    node.children = [_rebase(child, node.level, depth + 1) for child in node.children]
    return node


def tree_from_json(data: Any, depth: int = 0) -> Tree:
    """Validate a tree received from a guest or a remote (untrusted): schema, depth, node count, names."""
    if not isinstance(data, dict) or not isinstance(data.get("vms"), list):
        raise GuestError("the tree from the guest is malformed")
    budget = [MAX_NODES]
    return Tree(_clean(data.get("host"), "?"), _int(data.get("level"), 0),
                [node_from_json(n, depth + 1, budget) for n in data["vms"]])


def node_from_json(data: Any, depth: int, budget: list[int] | None = None) -> TreeNode:
    """One node and its subtree; `budget` holds how many more nodes the whole tree may have."""
    budget = [MAX_NODES] if budget is None else budget
    if depth > MAX_DEPTH:
        raise GuestError(f"the tree from the guest is deeper than {MAX_DEPTH} levels")
    budget[0] -= 1
    if budget[0] < 0:
        raise GuestError(f"the tree from the guest has more than {MAX_NODES} VMs")
    if not isinstance(data, dict):
        raise GuestError("a tree node from the guest is malformed")
    name = _clean(data.get("name"), "?")
    children = data.get("children") or []
    if not isinstance(children, list):
        raise GuestError(f"tree node '{name}' has malformed children")
    running = data.get("hypervisor_running")
    reachable = data.get("reachable")
    error = data.get("error")
    return TreeNode(
        name=name, level=_int(data.get("level"), 0), state=_clean(data.get("state"), "unknown"),
        vcpus=_int(data.get("vcpus"), 0), memory=_clean(data.get("memory"), "?"), nested=data.get("nested") is True,
        hypervisor_running=running if isinstance(running, bool) else None,
        reachable=reachable if isinstance(reachable, bool) else None,
        error=_clean(error, "") if error is not None else None,
        children=[node_from_json(child, depth + 1, budget) for child in children],
    )


def _clean(value: Any, default: str, limit: int = 200) -> str:
    """A printable string: control characters (terminal escapes) removed, length bounded."""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return default
    return "".join(ch for ch in str(value) if ch.isprintable())[:limit] or default


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 31 else default
