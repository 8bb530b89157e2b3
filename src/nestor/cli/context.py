from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import InvalidInput

if TYPE_CHECKING:
    from ..hypervisor import Hypervisor
    from ..service import Service


@dataclass
class Ctx:
    home: Path
    netns: str | None
    debug: bool
    remote: str | None = None
    _service: Service | None = field(default=None, repr=False)
    _backend: Hypervisor | None = field(default=None, repr=False)

    @property
    def service(self) -> Hypervisor:
        """This host's service, or with `--remote NAME` a client of that host's API: either way
        a nestor.hypervisor.Hypervisor (the same names, arguments and result types)."""
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
CREATING = frozenset({"vm new", "switch new", "nat new", "image build", "quickstart", "serve", "host add", "host set",
                      "ps"})  # `nestor ps` runs a script that may create VMs (New-VM)


pass_ctx = click.make_pass_decorator(Ctx)
