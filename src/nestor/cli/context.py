from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import InvalidInput, NestorError

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


    @contextmanager
    def level(self, path: str, local: bool = False) -> Iterator[Hypervisor]:
        """The Hypervisor at `path` ('' or none: this host's; 'l1/l2': the nestor inside l2 inside
        l1, nestor.hypervisor.at). `local`: a command that runs only on this host, not --remote."""
        from ..hypervisor import at, split_levels

        root = self.local if local else self.service
        if not split_levels(path or ""):
            yield root
            return
        with at(root, path) as level:
            yield level

    @contextmanager
    def vm(self, path: str, local: bool = False) -> Iterator[tuple[Hypervisor, str]]:
        """The level of the VM at `path` ('web', 'l1/l2') and the VM's own name there; errors
        name the level (`vm 'l1/l9': no VM 'l9' in l1`)."""
        from ..hypervisor import level_error, split_path

        levels, name = split_path(path)
        above = "/".join(levels)
        try:
            with self.level(above, local) as level:
                yield level, name
        except NestorError as exc:
            reworded = level_error(path, above, exc)
            if reworded is exc:
                raise
            raise reworded from exc

    def only_here(self, path: str, what: str) -> str:
        """`path` when it names a VM of this host; a VM below refused for `what` (no route for it yet)."""
        from ..hypervisor import split_path

        levels, name = split_path(path)
        if levels:
            raise InvalidInput(f"vm '{path}': {what} works on this host's VMs only",
                               hint=f"nestor vm exec {'/'.join(levels)} -- nestor ... {name}")
        return name


AT = click.option("--at", "at", default="", metavar="PATH",
                  help="the level: a VM path such as l1 or l1/l2, whose nestor does it (default: this host)")


# The commands that may make a new home; every other one refuses a home that does not exist
# (a mistyped --home must not leave an empty home behind).
CREATING = frozenset({"vm new", "switch new", "nat new", "image build", "quickstart", "serve", "host add", "host set",
                      "ps", "lab up"})  # `nestor ps` runs a script that may create VMs (New-VM)


pass_ctx = click.make_pass_decorator(Ctx)
