"""VMs on libvirt hosts behind the same facade as local ones (issue 12).

The libvirt side is a driver (nestor.remote.hosts.Hosts): it answers the Hypervisor protocol's
methods for VMs and hosts with the protocol's signatures and typed results, so the Service hands
it a VM on a libvirt host as it hands a local one to its own engine, and nothing here parses
what it returns. This module loads the driver (and the binding) only when a libvirt host or a VM
on one is involved (`vm list` and `tree` do not pay for it otherwise; an L1 has no binding), and
answers "is this name on a libvirt host?" from SQLite alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import HostError
from .core import Core
from .types import HostTree, TreeNode

if TYPE_CHECKING:
    from ..remote.hosts import Hosts
    from ..remote.nats import RemoteNats


class Remote:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._driver: Hosts | None = None

    @property
    def driver(self) -> Hosts:
        """The libvirt driver: VMs on libvirt hosts, and the hosts themselves."""
        if self._driver is None:
            try:
                from ..remote.hosts import Hosts
            except ImportError as exc:  # the `libvirt` extra is not installed (an L1's payload has no binding)
                raise HostError(f"the libvirt Python binding is not installed ({exc})",
                                hint="bash scripts/setup installs it (pip install -e '.[libvirt]')") from exc
            self._driver = Hosts(self.core.conn)
        return self._driver

    @property
    def nats(self) -> RemoteNats:
        from ..remote.nats import RemoteNats

        return RemoteNats(self.driver)

    def owns_nat(self, name: str) -> bool:
        """Is NAME a NAT on a libvirt host? (no binding loaded)"""
        return self.core.conn.execute("SELECT 1 FROM remote_nats WHERE name = ?", (name,)).fetchone() is not None

    def has_nats(self) -> bool:
        return self.core.conn.execute("SELECT 1 FROM remote_nats LIMIT 1").fetchone() is not None

    def owns(self, name: str) -> bool:
        """Is NAME a VM on a libvirt host? (one indexed query; no binding loaded)"""
        return self.core.conn.execute("SELECT 1 FROM remote_vms WHERE name = ?", (name,)).fetchone() is not None

    def has_vms(self) -> bool:
        return self.core.conn.execute("SELECT 1 FROM remote_vms LIMIT 1").fetchone() is not None

    def has_hosts(self) -> bool:
        return self.core.conn.execute("SELECT 1 FROM hosts LIMIT 1").fetchone() is not None

    def tree(self, timeout: float = 30.0) -> list[HostTree]:
        """Every libvirt host, nestor's VMs there, and the levels inside each running VM with
        nesting on, read from the nestor inside through its API channel (as for local L1s)."""
        return self.driver.host_trees(lambda node: self._descend(node, timeout))

    def _descend(self, node: TreeNode, timeout: float) -> None:
        from ..client import Client
        from .guests import descend

        descend(node, lambda: Client(transport=self.driver.api_transport(node.name, timeout), timeout=timeout), timeout)
