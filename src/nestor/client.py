"""A typed Python client of the nestor API (httpx): the programmatic interface of nestor.

    from nestor.client import Client
    from nestor.service import VMSpec

    with Client.local() as api:                       # this host's daemon, over its unix socket
        api.vm_new(VMSpec("web", memory=512 << 20))
        api.vm_start("web")                           # waits for the operation
        print([vm.state for vm in api.vm_list()])

    with Client("https://host:8443", token="…", verify="ca.crt") as api:   # another host, TLS + token
        ...

Results are the service's own types (nestor.service.types), errors the same NestorError classes
the service raises (with kind, rule, hint), so code written against the facade reads the same.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from .errors import EngineError, NestorError
from .service.guest_types import (
    CheckpointInfo,
    CheckpointResult,
    DiskInfo,
    DiskResize,
    GuestSpec,
    StoredImageInfo,
    VMAddress,
)
from .service.net_types import AdapterInfo, GuardChange, NatInfo, SwitchDetail, SwitchInfo, SwitchRemoval, SwitchType
from .service.types import (
    ExecResult,
    HostInfo,
    HostReport,
    ImageInfo,
    MemoryChange,
    MemoryResult,
    MoveResult,
    NewVM,
    ProcessorResult,
    SaveResult,
    StopResult,
    Tree,
    VMInfo,
    VMSpec,
    from_json,
    to_json,
)

T = TypeVar("T")
DEFAULT_TIMEOUT = 60.0
OPERATION_POLL = 30.0  # seconds one long-poll of an operation waits


class Client:
    def __init__(self, base_url: str = "http://nestor", *, socket: Path | str | None = None, token: str | None = None,
                 verify: str | Path | bool | ssl.SSLContext = True, transport: httpx.BaseTransport | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        """`verify`: True (the system's CAs), a CA file (the daemon's HOME/tls/ca.crt), or an SSLContext."""
        if transport is None and socket is not None:
            transport = httpx.HTTPTransport(uds=str(socket))
        if isinstance(verify, str | Path):
            verify = ssl.create_default_context(cafile=str(verify))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout
        self._http = httpx.Client(base_url=base_url, transport=transport, headers=headers, verify=verify,
                                  timeout=timeout)

    @classmethod
    def local(cls, home: Path | None = None, timeout: float = DEFAULT_TIMEOUT) -> Client:
        """The daemon of `home` (default: $NESTOR_HOME or /var/lib/nestor) on its unix socket."""
        from . import paths

        return cls(socket=paths.Home(home or paths.default_home()).api_socket, timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing -----------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Any = None, timeout: float | None = None,
                 params: dict[str, Any] | None = None) -> Any:
        """One request; `timeout` is the HTTP client's, `params` the query (None values left out)."""
        try:
            response = self._http.request(method, f"/v1{path}", json=body,
                                          params={k: v for k, v in (params or {}).items() if v is not None},
                                          timeout=timeout or self.timeout)
        except httpx.HTTPError as exc:
            raise EngineError(f"cannot reach the nestor API: {exc}", hint="is nestor serve running? (nestor serve)") from exc
        if response.status_code >= 400:
            raise _error(response)
        if response.status_code == 204 or not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    def _operation(self, op: dict[str, Any], timeout: float | None) -> Any:
        """Follow an operation (202) to its end; its result, or its error raised."""
        deadline = time.monotonic() + (timeout or 3600.0)
        while op["status"] in ("pending", "running"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise EngineError(f"operation {op['id']} ({op['description']}) did not end in time",
                                  hint=f"GET {op['url']}")
            wait = min(left, OPERATION_POLL)
            op = self._request("GET", f"/operations/{op['id']}", timeout=wait + 10, params={"wait": round(wait, 1)})
        if op["status"] != "success":
            raise NestorError.from_json(op.get("error") or {"message": f"operation {op['status']}"})
        return op["result"]

    # -- host and VMs -------------------------------------------------------------------------
    def host_check(self) -> HostReport:
        return from_json(HostReport, self._request("GET", "/host"))

    def vm_list(self) -> list[VMInfo]:
        return [from_json(VMInfo, v) for v in self._request("GET", "/vms")]

    def vm_show(self, name: str) -> VMInfo:
        return from_json(VMInfo, self._request("GET", f"/vms/{name}"))

    def vm_new(self, spec: VMSpec) -> NewVM:
        body = to_json(spec)
        body["switches"] = list(spec.switches)
        return from_json(NewVM, self._request("POST", "/vms", body))

    def vm_move(self, name: str, host: str, timeout: float | None = None) -> MoveResult:
        return from_json(MoveResult, self._operation(self._request("POST", f"/vms/{name}/move", {"host": host}), timeout))

    def host_add(self, name: str, uri: str) -> HostInfo:
        return from_json(HostInfo, self._request("POST", "/hosts", {"name": name, "uri": uri}))

    def host_list(self) -> list[HostInfo]:
        return [from_json(HostInfo, h) for h in self._request("GET", "/hosts")]

    def host_show(self, name: str) -> HostInfo:
        return from_json(HostInfo, self._request("GET", f"/hosts/{name}"))

    def host_remove(self, name: str) -> None:
        self._request("DELETE", f"/hosts/{name}")

    def vm_start(self, name: str, timeout: float | None = None) -> VMInfo:
        return self.vm_started(self.vm_start_submit(name), timeout)

    def vm_start_submit(self, name: str) -> dict[str, Any]:
        """Start `name` without waiting for it: the operation (202), for `vm_started`. Other requests
        may go in meanwhile (the server starts the VM in a worker)."""
        op: dict[str, Any] = self._request("POST", f"/vms/{name}/start")
        return op

    def vm_started(self, op: dict[str, Any], timeout: float | None = None) -> VMInfo:
        """Wait for a start submitted with `vm_start_submit`: the VM, or the start's error raised."""
        return from_json(VMInfo, self._operation(op, timeout))

    def vm_stop(self, name: str, turn_off: bool = False, timeout: float = 30.0) -> StopResult:
        op = self._request("POST", f"/vms/{name}/stop", {"turn_off": turn_off, "timeout": timeout})
        return from_json(StopResult, self._operation(op, timeout + 60))

    def vm_save(self, name: str) -> SaveResult:
        return from_json(SaveResult, self._operation(self._request("POST", f"/vms/{name}/save"), None))

    def vm_remove(self, name: str, force: bool = False) -> None:
        self._request("DELETE", f"/vms/{name}", params={"force": "true" if force else None})

    def vm_set_processor(self, name: str, count: int | None = None, nested: bool | None = None) -> ProcessorResult:
        return from_json(ProcessorResult, self._request("PATCH", f"/vms/{name}/processor",
                                                        {"count": count, "nested": nested}))

    def vm_set_memory(self, name: str, change: MemoryChange) -> MemoryResult:
        return from_json(MemoryResult, self._request("PATCH", f"/vms/{name}/memory", to_json(change)))

    def vm_upgrade(self, name: str) -> VMInfo:
        return from_json(VMInfo, self._request("POST", f"/vms/{name}/upgrade"))

    def vm_exec(self, target: str, argv: list[str], timeout: float = 120.0) -> ExecResult:
        data = self._request("POST", f"/vms/{target}/exec", {"argv": argv, "timeout": timeout}, timeout=timeout + 15)
        return from_json(ExecResult, data)

    def vm_log(self, name: str, until: str | None = None, timeout: float | None = None,
               tail: int | None = None) -> bytes:
        wait = (timeout or 0) + 15 if until else None
        data: bytes = self._request("GET", f"/vms/{name}/log", timeout=wait,
                                    params={"until": until, "tail": tail, "timeout": timeout or None})
        return data or b""

    def tree(self, timeout: float = 30.0) -> Tree:
        from .service.guests import tree_from_json

        return tree_from_json(self._request("GET", "/tree", timeout=timeout + 15, params={"timeout": timeout}))

    def image_list(self) -> list[ImageInfo]:
        return [from_json(ImageInfo, v) for v in self._request("GET", "/images")]

    def image_build(self, name: str, force: bool = False, timeout: float | None = None) -> ImageInfo:
        return from_json(ImageInfo, self._operation(self._request("POST", f"/images/{name}/build", {"force": force}),
                                                    timeout))

    def image_build_debian(self, release: str | None = None, packages: list[str] | None = None,
                           size: int | None = None, name: str | None = None, force: bool = False,
                           timeout: float | None = None) -> StoredImageInfo:
        """`image build debian`: a bootable disk image from Debian packages (an operation)."""
        body = {"force": force, "release": release, "packages": packages or [], "size": size, "image_name": name}
        return from_json(StoredImageInfo, self._operation(self._request("POST", "/images/debian/build", body), timeout))

    def image_import(self, path: Path | str, name: str | None = None, timeout: float | None = None,
                     fmt: str | None = None, force: bool = False) -> StoredImageInfo:
        """Import a qcow2 or raw file of the server's files directory (an operation; qemu-img's checks apply)."""
        op = self._request("POST", "/images/store", {"path": str(path), "name": name, "format": fmt, "force": force})
        return from_json(StoredImageInfo, self._operation(op, timeout))

    def image_store_list(self) -> list[StoredImageInfo]:
        return [from_json(StoredImageInfo, v) for v in self._request("GET", "/images/store")]

    def image_remove(self, name: str) -> None:
        self._request("DELETE", f"/images/store/{name}")

    # -- disk-image VMs -----------------------------------------------------------------------
    def vm_new_guest(self, name: str, guest: GuestSpec, vcpus: int = 1, memory: int = 512 << 20,
                     nested: bool = False, config_version: str | None = None) -> NewVM:
        """A disk-image VM (files named in `guest` are on the server's host)."""
        body: dict[str, Any] = {"name": name, "vcpus": vcpus, "memory": memory, "nested": nested,
                                "config_version": config_version, "image": guest.image,
                                "switches": list(guest.switches), "generation": guest.generation,
                                "secure_boot": guest.secure_boot, "disk_size": guest.disk_size, "user": guest.user,
                                "no_ssh_key": guest.no_ssh_key, "hostname": guest.hostname}
        for key in ("iso", "ssh_key", "cloud_init"):
            value = getattr(guest, key)
            body[key] = str(value) if value is not None else None
        return from_json(NewVM, self._request("POST", "/vms", body))

    def vm_disk_list(self, vm: str) -> list[DiskInfo]:
        return [from_json(DiskInfo, d) for d in self._request("GET", f"/vms/{vm}/disks")]

    def vm_disk_add(self, vm: str, name: str, size: int) -> DiskInfo:
        return from_json(DiskInfo, self._request("POST", f"/vms/{vm}/disks", {"name": name, "size": size}))

    def vm_disk_resize(self, vm: str, name: str, size: int) -> DiskResize:
        return from_json(DiskResize, self._request("PATCH", f"/vms/{vm}/disks/{name}", {"size": size}))

    def vm_disk_remove(self, vm: str, name: str) -> None:
        self._request("DELETE", f"/vms/{vm}/disks/{name}")

    def vm_checkpoint_list(self, vm: str) -> list[CheckpointInfo]:
        return [from_json(CheckpointInfo, c) for c in self._request("GET", f"/vms/{vm}/checkpoints")]

    def vm_checkpoint_new(self, vm: str, name: str, timeout: float | None = None) -> CheckpointResult:
        op = self._request("POST", f"/vms/{vm}/checkpoints", {"name": name})
        return from_json(CheckpointResult, self._operation(op, timeout))

    def vm_checkpoint_apply(self, vm: str, name: str, timeout: float | None = None) -> CheckpointResult:
        op = self._request("POST", f"/vms/{vm}/checkpoints/{name}/apply")
        return from_json(CheckpointResult, self._operation(op, timeout))

    def vm_checkpoint_remove(self, vm: str, name: str) -> None:
        self._request("DELETE", f"/vms/{vm}/checkpoints/{name}")

    def vm_address(self, vm: str) -> VMAddress:
        """Where the running VM can be reached and how that was found (lease, guest agent, static)."""
        return from_json(VMAddress, self._request("GET", f"/vms/{vm}/address"))

    # -- network ------------------------------------------------------------------------------
    def switch_new(self, name: str, type_: str | SwitchType, uplink: str | None = None,
                   move_addresses: bool = False) -> SwitchInfo:
        body = {"name": name, "type": str(type_), "uplink": uplink, "move_addresses": move_addresses}
        return from_json(SwitchInfo, self._request("POST", "/switches", body))

    def switch_set_ip(self, name: str, address: str) -> SwitchInfo:
        return from_json(SwitchInfo, self._request("PUT", f"/switches/{name}/address", {"address": address}))

    def switch_list(self) -> list[SwitchInfo]:
        return [from_json(SwitchInfo, v) for v in self._request("GET", "/switches")]

    def switch_show(self, name: str) -> SwitchDetail:
        return from_json(SwitchDetail, self._request("GET", f"/switches/{name}"))

    def switch_remove(self, name: str, force: bool = False) -> SwitchRemoval:
        return from_json(SwitchRemoval, self._request("DELETE", f"/switches/{name}", params={"force": force}))

    def adapter_add(self, vm: str, switch: str, mac: str | None = None, name: str | None = None) -> AdapterInfo:
        body = {"switch": switch, "mac": mac, "name": name}
        return from_json(AdapterInfo, self._request("POST", f"/vms/{vm}/adapters", body))

    def adapter_list(self, vm: str) -> list[AdapterInfo]:
        return [from_json(AdapterInfo, v) for v in self._request("GET", f"/vms/{vm}/adapters")]

    def adapter_set(self, vm: str, name: str, change: GuardChange) -> AdapterInfo:
        body = {k: v for k, v in to_json(change).items() if v is not None}
        return from_json(AdapterInfo, self._request("PATCH", f"/vms/{vm}/adapters/{name}", body))

    def adapter_remove(self, vm: str, name: str) -> None:
        self._request("DELETE", f"/vms/{vm}/adapters/{name}")

    def nat_new(self, name: str, switch: str | None, prefix: str, dhcp: bool = False,
                host: str | None = None) -> NatInfo:
        """On this machine's internal `switch`, or (with `host`, switch None) a libvirt NAT network there."""
        body = {"name": name, "switch": switch, "host": host, "prefix": prefix, "dhcp": dhcp}
        return from_json(NatInfo, self._request("POST", "/nats", body))

    def nat_list(self) -> list[NatInfo]:
        return [from_json(NatInfo, v) for v in self._request("GET", "/nats")]

    def nat_show(self, name: str) -> NatInfo:
        return from_json(NatInfo, self._request("GET", f"/nats/{name}"))

    def nat_remove(self, name: str) -> None:
        self._request("DELETE", f"/nats/{name}")

    # -- operations and events ----------------------------------------------------------------
    def operations(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/operations")
        return result

    def cancel(self, op_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("DELETE", f"/operations/{op_id}")
        return result

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """The event stream (lifecycle, operations, balancer decisions), one dict per event."""
        with self._http.stream("GET", "/v1/events", timeout=httpx.Timeout(self.timeout, read=timeout)) as response:
            if response.status_code >= 400:
                response.read()
                raise _error(response)
            for line in response.iter_lines():
                if line.startswith("data: "):
                    yield json.loads(line[6:])


def _error(response: httpx.Response) -> NestorError:
    try:
        body = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return EngineError(f"the nestor API answered {response.status_code}: {response.text[:200]}")
    return NestorError.from_json(body)
