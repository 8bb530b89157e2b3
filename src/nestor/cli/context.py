from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click

from ..service import Service


@dataclass
class Ctx:
    home: Path
    netns: str | None
    debug: bool
    _service: Service | None = field(default=None, repr=False)

    @property
    def service(self) -> Service:
        if self._service is None:
            command = click.get_current_context().command_path.split()[1:]
            self._service = Service(self.home, self.netns, create=" ".join(command) in CREATING)
        return self._service


# The commands that may make a new home; every other one refuses a home that does not exist
# (a mistyped --home must not leave an empty home behind).
CREATING = frozenset({"vm new", "switch new", "nat new", "image build", "quickstart", "serve", "host add",
                      "ps"})  # `nestor ps` runs a script that may create VMs (New-VM)


pass_ctx = click.make_pass_decorator(Ctx)
