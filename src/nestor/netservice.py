"""Network use cases: switches (bridges), adapters (taps), the MAC guard and NAT.

Placeholder contract; the Nestor service calls these hooks around a VM's lifecycle.
"""

from __future__ import annotations

import sqlite3

from . import paths
from .engine.argv import Nic
from .model import VMConfig


class Network:
    def __init__(self, home: paths.Home, netns: str | None, conn: sqlite3.Connection) -> None:
        self.home = home
        self.netns = netns
        self.conn = conn

    def attach(self, config: VMConfig) -> tuple[Nic, ...]:
        """Before QEMU starts: make the VM's taps (in --netns), apply guards; return its NICs."""
        return ()

    def detach(self, config: VMConfig) -> None:
        """After QEMU stopped: delete the VM's taps and their guard rules."""

    def forget(self, config: VMConfig) -> None:
        """The VM is being removed: drop its adapters."""
