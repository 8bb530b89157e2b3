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
            self._service = Service(self.home, self.netns)
        return self._service


pass_ctx = click.make_pass_decorator(Ctx)
