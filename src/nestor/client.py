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
the service raises (with kind, rule, hint), and the signatures the Service's: a Client is a
nestor.hypervisor.Hypervisor (tests/unit/test_hypervisor_parity.py). `api.guest("l1")` is the
nestor inside VM l1 (its requests carry `at=l1`, which the daemon forwards through l1's channel).
"""

from __future__ import annotations

import json
import ssl
import time
import typing
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import httpx

from . import untrusted
from .errors import EngineError, InvalidInput, NestorError
from .service.guest_types import (
    CheckpointInfo,
    CheckpointResult,
    DiskInfo,
    DiskResize,
    GuestSpec,
    StoredImageInfo,
    VMAddress,
)
from .service.net_types import (
    AdapterInfo,
    AdapterSpec,
    GuardChange,
    NatInfo,
    NatSpec,
    SwitchDetail,
    SwitchInfo,
    SwitchRemoval,
    SwitchSpec,
)
from .service.types import (
    AuditEntry,
    ExecResult,
    HostInfo,
    HostPolicy,
    HostReport,
    ImageInfo,
    MemoryChange,
    MemoryResult,
    MoveResult,
    NewVM,
    ProcessorResult,
    Progress,
    SaveResult,
    StopResult,
    Tree,
    VMInfo,
    VMSpec,
    from_json,
    no_progress,
    to_json,
)

if TYPE_CHECKING:
    from .images.debian import DebianRequest
    from .lab.types import (
        LabDown,
        LabInfo,
        LabInventory,
        LabPlan,
        LabRestored,
        LabSaved,
        LabStatus,
        LabUp,
        LevelReport,
    )

T = TypeVar("T")
DEFAULT_TIMEOUT = 60.0
OPERATION_POLL = 30.0  # seconds one long-poll of an operation waits
LEVEL_POLL = 2.0  # the same for a level below: a long poll would hold that level's channel
OPERATION_TIMEOUT = 3600.0  # how long a long use case (start, stop, build) may take
EXEC_TIMEOUT = 120.0
TREE_TIMEOUT = 30.0


class MalformedAnswer(EngineError):
    """An answer this client cannot read (not JSON, too many objects, not the type asked for).
    The other end may be a guest's nestor, which is not trusted: its answer never becomes an
    internal error here. channel.client turns it into a GuestError that names the VM."""


def _decode(cls: type[T], data: Any) -> T:
    """from_json, with any failure a MalformedAnswer (a list is checked to be one)."""
    name = getattr(cls, "__name__", str(cls))
    try:
        if typing.get_origin(cls) is list and not isinstance(data, list):
            raise TypeError("not a list")
        return from_json(cls, data)
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
        raise MalformedAnswer(f"the nestor API sent a malformed {name}: {type(exc).__name__}: {str(exc)[:100]}",
                              hint="is the other end a nestor of this version?") from None


def _parse(response: httpx.Response) -> Any:
    try:
        return untrusted.loads(response.content)
    except ValueError as exc:
        raise MalformedAnswer(f"the nestor API answered {response.status_code} with a body that is not readable JSON: "
                              f"{str(exc)[:100]}") from None


class Client:
    def __init__(self, base_url: str = "http://nestor", *, socket: Path | str | None = None, token: str | None = None,
                 verify: str | Path | bool | ssl.SSLContext = True, transport: httpx.BaseTransport | None = None,
                 timeout: float = DEFAULT_TIMEOUT, at: str = "", operation_timeout: float = OPERATION_TIMEOUT,
                 http: httpx.Client | None = None, where: str = "") -> None:
        """`verify`: True (the system's CAs), a CA file (the daemon's HOME/tls/ca.crt), or an SSLContext.
        `at`: the level below that API's own (a VM path, 'l1/l2'), which every request names.
        `http`: another Client's connection (guest()), which this one does not close.
        `where`: that API's own level as the caller names it ('l1' for l1's channel), so errors
        about a level below name it from the caller's end (`vm 'l1/l9': no VM 'l9' in l1`)."""
        if transport is None and socket is not None:
            transport = httpx.HTTPTransport(uds=str(socket))
        if isinstance(verify, str | Path):
            verify = ssl.create_default_context(cafile=str(verify))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout
        self.operation_timeout = operation_timeout
        self.at = at
        self.where = where
        self._owns_http = http is None
        self._http = http or httpx.Client(base_url=base_url, transport=transport, headers=headers, verify=verify,
                                          timeout=timeout)
        self._also: list[Any] = []  # what close() closes too (at(): the levels above this one)

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
        if self._owns_http:
            self._http.close()
        also, self._also = self._also, []
        for level in reversed(also):
            level.close()

    def close_also(self, levels: list[Any]) -> None:
        """Closing this Client closes `levels` too (nestor.hypervisor.at: the chain it opened)."""
        self._also.extend(levels)

    def guest(self, name: str) -> Client:
        """The nestor inside running VM `name` of this API's level: the same connection, with `at`
        one level deeper (the daemon forwards the requests through the VM's channel)."""
        from .model import validate_name

        validate_name(name)
        return Client(timeout=self.timeout, at=f"{self.at}/{name}" if self.at else name,
                      operation_timeout=self.operation_timeout, http=self._http, where=self.where)

    def forward(self, method: str, path: str, query: str, headers: dict[str, str],
                body: bytes, timeout: float | None = None) -> httpx.Response:
        """One request passed on as it is (the API's forwarding layer, api/forward.py): `path`
        under the server's root, `query` its query string; the answer as it came."""
        try:
            return self._http.request(method, path, params=httpx.QueryParams(query), headers=headers, content=body,
                                      timeout=timeout or self.timeout)
        except httpx.HTTPError as exc:
            raise EngineError(f"cannot reach the nestor API: {exc}", hint="is nestor serve running? (nestor serve)") from exc

    # -- plumbing -----------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Any = None, timeout: float | None = None,
                 params: dict[str, Any] | None = None) -> Any:
        """One request; `timeout` is the HTTP client's, `params` the query (None values left out)."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        if self.at:
            query["at"] = self.at
        try:
            response = self._http.request(method, f"/v1{path}", json=body, params=query,
                                          timeout=timeout or self.timeout)
        except httpx.HTTPError as exc:
            raise EngineError(f"cannot reach the nestor API: {exc}", hint="is nestor serve running? (nestor serve)") from exc
        if response.status_code >= 400:
            raise self._level_error(response)
        if response.status_code == 204 or not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return _parse(response)
        return response.content

    def _operation(self, op: dict[str, Any], timeout: float | None = None, progress: Progress = no_progress) -> Any:
        """Follow an operation (202) to its end, its progress lines to `progress`; its result, or its error raised."""
        deadline = time.monotonic() + (timeout or self.operation_timeout)
        seen = 0
        _check_operation(op)
        while True:
            lines = op.get("progress")
            lines = lines if isinstance(lines, list) else []
            for line in lines[seen:]:
                progress(untrusted_line(line))
            seen = max(seen, len(lines))
            if op["status"] not in ("pending", "running"):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise EngineError(f"operation {op['id']} ({op.get('description')}) did not end in time",
                                  hint=f"GET /v1/operations/{op['id']}")
            wait = min(left, LEVEL_POLL if self.at else OPERATION_POLL)
            op = _check_operation(self._request("GET", f"/operations/{op['id']}", timeout=wait + self._poll_slack(),
                                                params={"wait": round(wait, 1)}))
        if op["status"] != "success":
            error = op.get("error")
            raise NestorError.from_json(error if isinstance(error, dict) else {"message": f"operation {op['status']}"})
        return op.get("result")

    def _poll_slack(self) -> float:
        """How much longer than its wait one operation poll may take to answer. A level below answers
        through every level above it, each busy with its own guests (an l2 booting an l3 under TCG
        answers l1's forward in tens of seconds), so it gets this client's own timeout."""
        return max(self.timeout, 10.0) if self.at else 10.0

    def _level_error(self, response: httpx.Response) -> NestorError:
        """The error of an answer; one about a level below (api/forward.py's header) names that
        level by its path from the caller's end."""
        err = _error(response)
        failed = response.headers.get(LEVEL_HEADER)
        if not failed:
            return err
        from .hypervisor import level_error

        path = f"{self.where}/{failed}" if self.where else failed
        return level_error(path, path.rpartition("/")[0], err)

    # -- host and VMs -------------------------------------------------------------------------
    def host_check(self) -> HostReport:
        return _decode(HostReport, self._request("GET", "/host"))

    def host_policy(self) -> HostPolicy:
        return _decode(HostPolicy, self._request("GET", "/host/policy"))

    def host_set_policy(self, nesting: str | None = None) -> HostPolicy:
        return _decode(HostPolicy, self._request("PATCH", "/host/policy", {"nesting": nesting}))

    def audit_list(self, since: str | None = None, limit: int = 1000) -> list[AuditEntry]:
        return _decode(list[AuditEntry], self._request("GET", "/audit", params={"since": since, "limit": limit}))

    def metrics(self) -> str:
        """GET /metrics: Prometheus's text format (not under /v1)."""
        try:
            response = self._http.get("/metrics", timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise EngineError(f"cannot reach the nestor API: {exc}", hint="is nestor serve running? (nestor serve)") from exc
        if response.status_code >= 400:
            raise _error(response)
        return response.text

    def vm_list(self) -> list[VMInfo]:
        return _decode(list[VMInfo], self._request("GET", "/vms"))

    def vm_show(self, name: str) -> VMInfo:
        return _decode(VMInfo, self._request("GET", f"/vms/{name}"))

    def vm_new(self, spec: VMSpec) -> NewVM:
        body = to_json(spec)
        body["switches"] = list(spec.switches)
        return _decode(NewVM, self._request("POST", "/vms", body))

    def vm_new_guest(self, name: str, guest: GuestSpec, vcpus: int = 1, memory: int = 512 << 20,
                     nested: bool = False, config_version: str | None = None) -> NewVM:
        """A disk-image VM (files named in `guest` are on the server's host)."""
        return self.vm_new_request(VMSpec(name, vcpus=vcpus, memory=memory, nested=nested, image=guest.image,
                                          config_version=config_version, switches=tuple(guest.switches)), guest)

    def vm_new_request(self, spec: VMSpec, guest: GuestSpec) -> NewVM:
        """`vm new` of any kind (POST /vms): the spec's fields and the guest's, in one body (the
        spec's image and switches, as the service takes them)."""
        body = to_json(spec)
        body["switches"] = list(spec.switches)
        body.update({"generation": guest.generation, "secure_boot": guest.secure_boot, "disk_size": guest.disk_size,
                     "user": guest.user, "no_ssh_key": guest.no_ssh_key, "hostname": guest.hostname,
                     "no_network": guest.no_network, "tpm": guest.tpm})
        for key in ("iso", "ssh_key", "cloud_init"):
            value = getattr(guest, key)
            body[key] = str(value) if value is not None else None
        return _decode(NewVM, self._request("POST", "/vms", body))

    def vm_move(self, name: str, host: str, progress: Progress = no_progress) -> MoveResult:
        op = self._request("POST", f"/vms/{name}/move", {"host": host})
        return _decode(MoveResult, self._operation(op, progress=progress))

    def host_add(self, name: str, uri: str) -> HostInfo:
        return _decode(HostInfo, self._request("POST", "/hosts", {"name": name, "uri": uri}))

    def host_list(self) -> list[HostInfo]:
        return _decode(list[HostInfo], self._request("GET", "/hosts"))

    def host_show(self, name: str) -> HostInfo:
        return _decode(HostInfo, self._request("GET", f"/hosts/{name}"))

    def host_remove(self, name: str) -> None:
        self._request("DELETE", f"/hosts/{name}")

    def vm_start(self, name: str) -> VMInfo:
        return self.vm_started(self.vm_start_submit(name))

    def vm_start_submit(self, name: str) -> dict[str, Any]:
        """Start `name` without waiting for it: the operation (202), for `vm_started`. Other requests
        may go in meanwhile (the server starts the VM in a worker)."""
        op: dict[str, Any] = self._request("POST", f"/vms/{name}/start")
        return op

    def vm_started(self, op: dict[str, Any], timeout: float | None = None) -> VMInfo:
        """Wait for a start submitted with `vm_start_submit`: the VM, or the start's error raised."""
        return _decode(VMInfo, self._operation(op, timeout))

    def vm_stop(self, name: str, turn_off: bool = False, timeout: float = 30.0) -> StopResult:
        op = self._request("POST", f"/vms/{name}/stop", {"turn_off": turn_off, "timeout": timeout})
        return _decode(StopResult, self._operation(op, timeout + 60))

    def vm_save(self, name: str) -> SaveResult:
        return _decode(SaveResult, self._operation(self._request("POST", f"/vms/{name}/save")))

    def vm_remove(self, name: str, force: bool = False) -> None:
        self._request("DELETE", f"/vms/{name}", params={"force": "true" if force else None})

    def vm_set_processor(self, name: str, count: int | None = None, nested: bool | None = None,
                         enlightenments: str | None = None) -> ProcessorResult:
        body: dict[str, Any] = {"count": count, "nested": nested}
        if enlightenments is not None:  # an older server's body forbids unknown fields
            body["enlightenments"] = enlightenments
        return _decode(ProcessorResult, self._request("PATCH", f"/vms/{name}/processor", body))

    def vm_set_tpm(self, name: str, on: bool, delete_state: bool = False) -> VMInfo:
        return _decode(VMInfo, self._request("PATCH", f"/vms/{name}/tpm", {"on": on, "delete_state": delete_state}))

    def vm_set_memory(self, name: str, change: MemoryChange) -> MemoryResult:
        return _decode(MemoryResult, self._request("PATCH", f"/vms/{name}/memory", to_json(change)))

    def vm_upgrade(self, name: str) -> VMInfo:
        return _decode(VMInfo, self._request("POST", f"/vms/{name}/upgrade"))

    def vm_exec(self, target: str, argv: list[str], timeout: float = EXEC_TIMEOUT) -> ExecResult:
        data = self._request("POST", f"/vms/{target}/exec", {"argv": argv, "timeout": timeout}, timeout=timeout + 15)
        return _decode(ExecResult, data)

    def vm_log(self, name: str, follow: bool = False, until: str | None = None, timeout: float | None = None,
               tail: int | None = None) -> Iterator[bytes]:
        """The serial console's output (the last `tail` bytes); with `until`, what came until that
        text appeared (or `timeout` passed). One answer: following without `until` is the
        console's own (the websocket, /v1/vms/NAME/console)."""
        if follow and until is None:
            raise InvalidInput("following a console log over the API needs --until TEXT",
                               hint="nestor vm log NAME --until TEXT, or the console (nestor vm console NAME)")
        wait = (timeout or 0) + 15 if until else None
        data = self._request("GET", f"/vms/{name}/log", timeout=wait,
                             params={"until": until, "tail": tail, "timeout": timeout or None})
        if data is not None and not isinstance(data, bytes):
            raise MalformedAnswer("the nestor API sent a log that is not bytes")
        if data:
            yield data

    def tree(self, timeout: float = TREE_TIMEOUT) -> Tree:
        from .service.guests import tree_from_json

        return tree_from_json(self._request("GET", "/tree", timeout=timeout + 15, params={"timeout": timeout}))

    def host_check_tree(self, path: str = "", timeout: float = 30.0) -> dict[str, Any]:
        from .service.report import check_tree_from_json

        return check_tree_from_json(self._request("GET", "/host/check-tree", timeout=timeout + 15,
                                                  params={"path": path or None, "timeout": timeout}))

    def bugreport(self, path: str = "", timeout: float = 30.0) -> dict[str, Any]:
        from .service.report import bugreport_from_json

        return bugreport_from_json(self._request("GET", "/host/bugreport", timeout=timeout + 15,
                                                 params={"path": path or None, "timeout": timeout}))

    def image_list(self) -> list[ImageInfo]:
        return _decode(list[ImageInfo], self._request("GET", "/images"))

    def image_build(self, image: str, progress: Progress, force: bool = False) -> ImageInfo:
        op = self._request("POST", f"/images/{image}/build", {"force": force})
        return _decode(ImageInfo, self._operation(op, progress=progress))

    def image_build_debian(self, request: DebianRequest, progress: Progress, force: bool = False) -> StoredImageInfo:
        """`image build debian`: a bootable disk image from Debian packages (an operation)."""
        body = {"force": force, "release": request.release, "packages": list(request.packages), "size": request.size,
                "image_name": request.name}
        op = self._request("POST", "/images/debian/build", body)
        return _decode(StoredImageInfo, self._operation(op, progress=progress))

    def image_import(self, file: Path, name: str | None, progress: Progress, fmt: str | None = None,
                     force: bool = False) -> StoredImageInfo:
        """Import a qcow2 or raw file of the server's files directory (an operation; qemu-img's checks apply)."""
        op = self._request("POST", "/images/store", {"path": str(file), "name": name, "format": fmt, "force": force})
        return _decode(StoredImageInfo, self._operation(op, progress=progress))

    def image_store_list(self) -> list[StoredImageInfo]:
        return _decode(list[StoredImageInfo], self._request("GET", "/images/store"))

    def image_remove(self, name: str) -> None:
        self._request("DELETE", f"/images/store/{name}")

    # -- disk-image VMs -----------------------------------------------------------------------
    def vm_disk_list(self, vm: str) -> list[DiskInfo]:
        return _decode(list[DiskInfo], self._request("GET", f"/vms/{vm}/disks"))

    def vm_disk_add(self, vm: str, name: str, size: int) -> DiskInfo:
        return _decode(DiskInfo, self._request("POST", f"/vms/{vm}/disks", {"name": name, "size": size}))

    def vm_disk_resize(self, vm: str, name: str, size: int) -> DiskResize:
        return _decode(DiskResize, self._request("PATCH", f"/vms/{vm}/disks/{name}", {"size": size}))

    def vm_disk_remove(self, vm: str, name: str) -> None:
        self._request("DELETE", f"/vms/{vm}/disks/{name}")

    def vm_checkpoint_list(self, vm: str) -> list[CheckpointInfo]:
        return _decode(list[CheckpointInfo], self._request("GET", f"/vms/{vm}/checkpoints"))

    def vm_checkpoint_new(self, vm: str, name: str) -> CheckpointResult:
        op = self._request("POST", f"/vms/{vm}/checkpoints", {"name": name})
        return _decode(CheckpointResult, self._operation(op))

    def vm_checkpoint_apply(self, vm: str, name: str) -> CheckpointResult:
        op = self._request("POST", f"/vms/{vm}/checkpoints/{name}/apply")
        return _decode(CheckpointResult, self._operation(op))

    def vm_checkpoint_remove(self, vm: str, name: str) -> None:
        self._request("DELETE", f"/vms/{vm}/checkpoints/{name}")

    def vm_address(self, vm: str) -> VMAddress:
        """Where the running VM can be reached and how that was found (lease, guest agent, static)."""
        return _decode(VMAddress, self._request("GET", f"/vms/{vm}/address"))

    # -- network ------------------------------------------------------------------------------
    def switch_new(self, spec: SwitchSpec) -> SwitchInfo:
        body = {"name": spec.name, "type": spec.type.value, "uplink": spec.uplink, "move_addresses": spec.move_addresses}
        return _decode(SwitchInfo, self._request("POST", "/switches", body))

    def switch_set_ip(self, name: str, address: str) -> SwitchInfo:
        return _decode(SwitchInfo, self._request("PUT", f"/switches/{name}/address", {"address": address}))

    def switch_list(self) -> list[SwitchInfo]:
        return _decode(list[SwitchInfo], self._request("GET", "/switches"))

    def switch_show(self, name: str) -> SwitchDetail:
        return _decode(SwitchDetail, self._request("GET", f"/switches/{name}"))

    def switch_remove(self, name: str, force: bool = False) -> SwitchRemoval:
        return _decode(SwitchRemoval, self._request("DELETE", f"/switches/{name}", params={"force": force}))

    def adapter_add(self, vm: str, spec: AdapterSpec) -> AdapterInfo:
        body = {"switch": spec.switch, "mac": spec.mac, "name": spec.name}
        return _decode(AdapterInfo, self._request("POST", f"/vms/{vm}/adapters", body))

    def adapter_list(self, vm: str) -> list[AdapterInfo]:
        return _decode(list[AdapterInfo], self._request("GET", f"/vms/{vm}/adapters"))

    def adapter_set(self, vm: str, name: str | None, change: GuardChange) -> AdapterInfo:
        """`name` None: the VM's one adapter (as the service picks it)."""
        body = {k: v for k, v in to_json(change).items() if v is not None}
        if name is None:
            adapters = self.adapter_list(vm)
            if len(adapters) != 1:
                which = "no network adapter" if not adapters else f"{len(adapters)} adapters: say which with --name"
                raise InvalidInput(f"vm '{vm}' has {which}", hint="adapters: " + ", ".join(a.name for a in adapters))
            name = adapters[0].name
        return _decode(AdapterInfo, self._request("PATCH", f"/vms/{vm}/adapters/{name}", body))

    def adapter_remove(self, vm: str, name: str) -> None:
        self._request("DELETE", f"/vms/{vm}/adapters/{name}")

    def nat_new(self, spec: NatSpec) -> NatInfo:
        """On this machine's internal switch, or (with a host, switch None) a libvirt NAT network there."""
        body = {"name": spec.name, "switch": spec.switch, "host": spec.host, "prefix": spec.prefix, "dhcp": spec.dhcp}
        return _decode(NatInfo, self._request("POST", "/nats", body))

    def nat_list(self) -> list[NatInfo]:
        return _decode(list[NatInfo], self._request("GET", "/nats"))

    def nat_show(self, name: str) -> NatInfo:
        return _decode(NatInfo, self._request("GET", f"/nats/{name}"))

    def nat_remove(self, name: str) -> None:
        self._request("DELETE", f"/nats/{name}")

    # -- labs ---------------------------------------------------------------------------------
    def level_report(self) -> LevelReport:
        """The level in one answer (GET /v1/level): what a lab's plan compares its file to."""
        from .lab.types import LevelReport

        return _decode(LevelReport, self._request("GET", "/level"))

    def lab_plan(self, text: str, source: str | None = None) -> LabPlan:
        """What `lab up` of the lab file's TEXT would do (the text travels: the server opens no file of the caller's)."""
        from .lab.types import LabPlan

        return _decode(LabPlan, self._request("POST", "/labs/plan", {"text": text, "source": source}))

    def lab_up(self, text: str, progress: Progress = no_progress, source: str | None = None) -> LabUp:
        from .lab.types import LabUp

        op = self._request("POST", "/labs", {"text": text, "source": source})
        return _decode(LabUp, self._operation(op, progress=progress))

    def lab_list(self) -> list[LabInfo]:
        from .lab.types import LabInfo

        return _decode(list[LabInfo], self._request("GET", "/labs"))

    def lab_status(self, name: str) -> LabStatus:
        from .lab.types import LabStatus

        return _decode(LabStatus, self._request("GET", f"/labs/{name}"))

    def lab_inventory(self, name: str) -> LabInventory:
        from .lab.types import LabInventory

        return _decode(LabInventory, self._request("GET", f"/labs/{name}/inventory"))

    def lab_down(self, name: str, progress: Progress = no_progress) -> LabDown:
        from .lab.types import LabDown

        return _decode(LabDown, self._operation(self._request("DELETE", f"/labs/{name}"), progress=progress))

    def lab_save(self, name: str, progress: Progress = no_progress) -> LabSaved:
        from .lab.types import LabSaved

        return _decode(LabSaved, self._operation(self._request("POST", f"/labs/{name}/save"), progress=progress))

    def lab_restore(self, name: str, progress: Progress = no_progress) -> LabRestored:
        from .lab.types import LabRestored

        return _decode(LabRestored, self._operation(self._request("POST", f"/labs/{name}/restore"), progress=progress))

    # -- operations and events ----------------------------------------------------------------
    def operations(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/operations")
        return result

    def cancel(self, op_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("DELETE", f"/operations/{op_id}")
        return result

    def events_recent(self, after: int = 0, limit: int = 100) -> bytes:
        """The level's ring of recent events numbered above `after` (GET /v1/events/recent), as
        the bytes it sent: its reader bounds and checks them (api/events_below.py)."""
        query: dict[str, Any] = {"after": after, "limit": limit}
        if self.at:
            query["at"] = self.at
        try:
            response = self._http.request("GET", "/v1/events/recent", params=query, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise EngineError(f"cannot reach the nestor API: {exc}", hint="is nestor serve running? (nestor serve)") from exc
        if response.status_code >= 400:
            raise self._level_error(response)
        return response.content

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """The event stream (lifecycle, operations, balancer decisions), one dict per event."""
        params = {"at": self.at} if self.at else None
        with self._http.stream("GET", "/v1/events", params=params,
                               timeout=httpx.Timeout(self.timeout, read=timeout)) as response:
            if response.status_code >= 400:
                response.read()
                raise self._level_error(response)
            for line in response.iter_lines():
                if line.startswith("data: "):
                    yield json.loads(line[6:])


LEVEL_HEADER = "x-nestor-level"  # api/forward.py: the level below that failed, from the API's end


def untrusted_line(line: Any) -> str:
    """A progress line from the other end, bounded (it may be a guest's nestor)."""
    return str(line)[:1000]


def _check_operation(op: Any) -> dict[str, Any]:
    if not (isinstance(op, dict) and isinstance(op.get("status"), str) and isinstance(op.get("id"), str)):
        raise MalformedAnswer("the nestor API sent a malformed operation")
    return op


def _error(response: httpx.Response) -> NestorError:
    try:
        body = untrusted.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError, IndexError):
        body = None
    if not isinstance(body, dict):
        return MalformedAnswer(f"the nestor API answered {response.status_code}: {response.text[:200]}")
    return NestorError.from_json(body)
