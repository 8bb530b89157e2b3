"""The handle of each level of a lab, opened from L0's home through nestor.hypervisor.

L0 is this home's Service; the level inside VM `hv1/web` is `at(root, "hv1/web")`: the channel
client of hv1's nestor, then that client's `guest("web")` (its requests carry `at=web`, and hv1's
nestor passes them on through web's channel). Every level answers the same Hypervisor protocol,
so a lab reaches any depth the same way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..client import Client
from ..errors import GuestError, NestorError, NotFound
from ..hypervisor import Hypervisor, at
from ..service import Service

API_TIMEOUT = 300.0  # one request to a level below (a VM start under TCG inside TCG), and the channel's lock
READY_POLL = 2.0  # between two asks of a level below that does not answer yet


class LabRoot(Service):
    """L0 for a lab: its first hop down waits as long as a lab's requests may take (and for the
    channel's lock, which a sibling VM's thread may hold for one of its requests)."""

    def guest(self, name: str) -> Client:
        from ..model import validate_name
        from ..service import channel

        self._local_only(name, "the nestor API channel")
        return channel.open_client(self.core, validate_name(name), API_TIMEOUT)


class Levels:
    """Opens the handle of a level by its path ("" is L0, "hv1" is inside VM hv1, to any depth)."""

    def __init__(self, home: Path, netns: str | None) -> None:
        self.home = home
        self.netns = netns

    def service(self) -> Service:
        return LabRoot(self.home, self.netns)

    @contextmanager
    def open(self, path: str) -> Iterator[Hypervisor]:
        with self.service() as root:
            hv = at(root, path)
            try:
                yield hv
            finally:
                if hv is not root:
                    hv.close()

    def wait_ready(self, path: str, timeout: float) -> None:
        """Until the nestor inside VM `path` answers (it starts after its VM boots, or resumes)."""
        parent, _, name = path.rpartition("/")
        if not parent:
            from ..service.channel import wait_ready

            with self.service() as root:
                wait_ready(root.core, name, timeout)
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.open(path) as hv:
                    hv.vm_list()
                return
            except NotFound:
                raise
            except NestorError:
                if time.monotonic() > deadline:
                    raise
            with self.open(parent) as above:
                if str(above.vm_show(name).state) != "running":
                    raise GuestError(f"vm '{path}' stopped while its nestor was starting",
                                     hint=f"nestor vm log {name} --at {parent}")
            time.sleep(READY_POLL)

    def write_file(self, level: str, dest: str, text: str) -> None:
        """Put a file into the level's own file system (a run script its VM is made with)."""
        if not level:
            from .. import files

            target = Path(dest)
            files.private_dir(target.parent)
            files.write_private(target, text.encode())
            return
        # printf's argument, not a shell string: the text is never parsed by the shell
        with self.service() as root:
            result = root.vm_exec(level, ["sh", "-c", 'mkdir -p "${2%/*}" && printf "%s" "$1" > "$2"', "sh", text, dest])
        if result.code != 0:
            raise GuestError(f"cannot write {dest} in {level}: {result.stderr.decode(errors='replace').strip()[:200]}")
