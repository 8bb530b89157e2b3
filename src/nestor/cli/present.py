"""How the CLI shows the service's typed results: sizes as 512M, states as words.

The CLI's JSON keeps the shape it always had (sizes as strings such as "512M"); the API
returns the typed results as they are (sizes in bytes).
"""

from __future__ import annotations

from typing import Any

from ..model import format_size
from ..service.types import Tree, TreeNode, VMInfo, to_json

SIZE_FIELDS = ("memory", "memory_minimum", "memory_maximum", "memory_room", "memory_assigned", "memory_demand")


def vm(info: VMInfo) -> dict[str, Any]:
    data = dict(vars(info))  # flat: no deep copy (vm list of 1,000 VMs)
    data["state"] = info.state.value
    for key in SIZE_FIELDS:
        if data[key] is not None:
            data[key] = format_size(data[key])
    return data


def tree(data: Tree) -> dict[str, Any]:
    out: dict[str, Any] = to_json(data)
    return out


def node(data: TreeNode) -> dict[str, Any]:
    out: dict[str, Any] = to_json(data)
    return out


def human_size(size: int) -> str:
    """8G, 1.5G, 481M, 12K: a size for people."""
    for unit, factor in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f}{unit}" if value >= 10 or value == int(value) else f"{value:.1f}{unit}"
    return f"{size}B"
