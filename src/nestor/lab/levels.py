"""The handle of each level of a lab, opened from L0's home.

STAND-IN, to be replaced by `nestor.hypervisor.at(root, path)` (issue 16, branch `levels`) when
it lands: today L0 is nestor.service.Service and one level down is the nestor API inside an L0
VM through its channel (nestor.service.channel.client), wrapped so that it takes the Service's
signatures (typed specs), as the contract's Client will. Levels deeper than L1 raise GuestError.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from ..errors import GuestError
from ..service import AdapterInfo, AdapterSpec, GuardChange, NatInfo, NatSpec, Service, SwitchInfo, SwitchSpec

API_TIMEOUT = 300.0  # one request to a level below (a VM start under TCG inside TCG)


class Handle(Protocol):
    """What a lab asks of a level: a subset of the contract's Hypervisor, with its signatures."""

    def vm_list(self) -> list[Any]: ...
    def vm_new(self, spec: Any) -> Any: ...
    def vm_start(self, name: str) -> Any: ...
    def vm_stop(self, name: str, turn_off: bool = False, timeout: float = 30.0) -> Any: ...
    def vm_remove(self, name: str, force: bool = False) -> None: ...
    def vm_set_processor(self, name: str, count: int | None = None, nested: bool | None = None) -> Any: ...
    def vm_set_memory(self, name: str, change: Any) -> Any: ...
    def switch_list(self) -> list[Any]: ...
    def switch_new(self, spec: SwitchSpec) -> Any: ...
    def switch_set_ip(self, name: str, address: str) -> Any: ...
    def switch_remove(self, name: str, force: bool = False) -> Any: ...
    def nat_list(self) -> list[Any]: ...
    def nat_new(self, spec: NatSpec) -> Any: ...
    def nat_remove(self, name: str) -> None: ...
    def adapter_list(self, vm: str) -> list[Any]: ...
    def adapter_add(self, vm: str, spec: AdapterSpec) -> Any: ...
    def adapter_set(self, vm: str, name: str, change: GuardChange) -> Any: ...
    def adapter_remove(self, vm: str, name: str) -> None: ...


class ClientLevel:
    """nestor.client.Client with the Service's signatures for switch_new, nat_new, adapter_add."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def switch_new(self, spec: SwitchSpec) -> SwitchInfo:
        result: SwitchInfo = self._client.switch_new(spec.name, spec.type, spec.uplink)
        return result

    def nat_new(self, spec: NatSpec) -> NatInfo:
        result: NatInfo = self._client.nat_new(spec.name, spec.switch, spec.prefix, dhcp=spec.dhcp)
        return result

    def adapter_add(self, vm: str, spec: AdapterSpec) -> AdapterInfo:
        result: AdapterInfo = self._client.adapter_add(vm, spec.switch, spec.mac, spec.name)
        return result


class Levels:
    """Opens the handle of a level by its path ("" is L0, "hv1" is inside VM hv1)."""

    def __init__(self, home: Path, netns: str | None) -> None:
        self.home = home
        self.netns = netns

    def service(self) -> Service:
        return Service(self.home, self.netns)

    @contextmanager
    def open(self, path: str) -> Iterator[Any]:
        service = self.service()
        if not path:
            yield service
            return
        if "/" in path:
            raise GuestError(f"level {path}: levels below L1 need nestor.hypervisor (issue 16), not in this build",
                             hint="keep VMs with their own VMs at L0 for now")
        from ..service.channel import client

        with client(service.core, path, timeout=API_TIMEOUT) as api:
            yield ClientLevel(api)

    def wait_ready(self, path: str, timeout: float) -> None:
        """Until the nestor inside VM `path` answers."""
        if "/" in path:
            raise GuestError(f"vm {path}: levels below L1 need nestor.hypervisor (issue 16)", hint="keep it at L1")
        from ..service.channel import wait_ready

        wait_ready(self.service().core, path, timeout)

    def write_file(self, level: str, dest: str, text: str) -> None:
        """Put a file into the level's own file system (a run script its VM is made with)."""
        if not level:
            from .. import files

            target = Path(dest)
            files.private_dir(target.parent)
            files.write_private(target, text.encode())
            return
        # printf's argument, not a shell string: the text is never parsed by the shell
        result = self.service().vm_exec(level, ["sh", "-c", 'mkdir -p "${2%/*}" && printf "%s" "$1" > "$2"', "sh", text, dest])
        if result.code != 0:
            raise GuestError(f"cannot write {dest} in {level}: {result.stderr.decode(errors='replace').strip()[:200]}")
