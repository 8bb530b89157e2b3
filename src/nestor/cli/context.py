from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import click

from ..errors import InvalidInput

if TYPE_CHECKING:
    from ..service import Service
    from ..service.types import (
        ExecResult,
        HostReport,
        MemoryChange,
        MemoryResult,
        NewVM,
        ProcessorResult,
        SaveResult,
        StopResult,
        Tree,
        VMInfo,
        VMSpec,
    )


class Backend(Protocol):
    """The use cases a command may run here (Service) or on a remote host (nestor.client.Client):
    the same names, arguments and result types, so the command's output does not change."""

    def host_check(self) -> HostReport: ...
    def vm_list(self) -> list[VMInfo]: ...
    def vm_show(self, name: str) -> VMInfo: ...
    def vm_new(self, spec: VMSpec) -> NewVM: ...
    def vm_start(self, name: str) -> VMInfo: ...
    def vm_stop(self, name: str, turn_off: bool = False, timeout: float = 30.0) -> StopResult: ...
    def vm_remove(self, name: str, force: bool = False) -> None: ...
    def vm_save(self, name: str) -> SaveResult: ...
    def vm_set_processor(self, name: str, count: int | None = None, nested: bool | None = None) -> ProcessorResult: ...
    def vm_set_memory(self, name: str, change: MemoryChange) -> MemoryResult: ...
    def vm_upgrade(self, name: str) -> VMInfo: ...
    def vm_exec(self, target: str, argv: list[str], timeout: float = ...) -> ExecResult: ...
    def tree(self, timeout: float = ...) -> Tree: ...


@dataclass
class Ctx:
    home: Path
    netns: str | None
    debug: bool
    remote: str | None = None
    _service: Service | None = field(default=None, repr=False)
    _backend: Backend | None = field(default=None, repr=False)

    @property
    def service(self) -> Backend:
        """This host's service, or with `--remote NAME` a client of that host's API."""
        if self._backend is None:
            if self.remote is not None:
                from .. import api_remotes

                self._backend = api_remotes.get(self.home, self.remote).client()
            else:
                self._backend = self.local
        return self._backend

    @property
    def local(self) -> Service:
        """This host's service, for commands that only run here (networking, images, logs, console)."""
        if self.remote is not None:
            command = click.get_current_context().command_path.removeprefix("nestor ")
            raise InvalidInput(f"'{command}' does not work with --remote yet",
                               hint=f"run it on that host, or: nestor {command} without --remote")
        if self._service is None:
            from ..service import Service

            words = click.get_current_context().command_path.split()[1:]
            self._service = Service(self.home, self.netns, create=" ".join(words) in CREATING)
        return self._service


# The commands that may make a new home; every other one refuses a home that does not exist
# (a mistyped --home must not leave an empty home behind).
CREATING = frozenset({"vm new", "switch new", "nat new", "image build", "quickstart", "serve", "host add",
                      "ps", "lab up"})  # `nestor ps` runs a script that may create VMs (New-VM)


pass_ctx = click.make_pass_decorator(Ctx)
