"""The API's resources. Each route: parse the request, call the facade, return to_json(result).

Routes are plain `def`: FastAPI runs them in its thread pool, and each opens its own Service.
Long work (start, stop, save, image builds) is an operation (202 + its URL; api/runtime.py).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidInput, NestorError
from ..service.guest_types import (
    CheckpointInfo,
    DiskInfo,
    DiskResize,
    GuestSpec,
    StoredImageInfo,
    VMAddress,
)
from ..service.net_types import (
    AdapterInfo,
    AdapterSpec,
    GuardChange,
    NatInfo,
    NatSpec,
    SwitchDetail,
    SwitchInfo,
    SwitchRemoval,
    SwitchSpec,
    SwitchType,
)
from ..service.types import (
    ExecResult,
    HostInfo,
    HostReport,
    ImageInfo,
    MemoryChange,
    MemoryResult,
    NewVM,
    ProcessorResult,
    Tree,
    VMInfo,
    VMSpec,
    to_json,
)


class ErrorBody(BaseModel):
    """The one error envelope's body (errors.py): `kind` is the machine-readable code."""

    kind: str = Field(description="invalid_input | not_found | conflict | wrong_state | policy | cancelled | host | "
                                  "image | engine | guest | unauthorized | internal")
    message: str
    hint: str | None
    rule: str | None = Field(description="the seed's rule that refused (kind policy), e.g. R2")
    resource: dict[str, str]


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class OperationOut(BaseModel):
    """Long work (202): follow `url` (GET with ?wait=SECONDS), cancel with DELETE."""

    id: str
    url: str
    description: str
    vm: str | None
    status: str = Field(description="pending | running | success | failure | cancelled")
    created: float
    ended: float | None
    progress: list[str]
    result: Any = Field(description="the use case's result once status is success")
    error: ErrorBody | None
    may_cancel: bool


def _doc(model: Any, status: int = 200) -> dict[Any, Any]:
    """Document a route's answer with the service's own type, without validating it again per request
    (listing 1,000 VMs should not pay pydantic for data the service typed already)."""
    return {status: {"model": model, "description": "success"}}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorEnvelope, "description": "invalid input"},
    401: {"model": ErrorEnvelope, "description": "no valid bearer token (TCP only)"},
    404: {"model": ErrorEnvelope, "description": "not found"},
    409: {"model": ErrorEnvelope, "description": "wrong state or conflict"},
    422: {"model": ErrorEnvelope, "description": "refused by one of the seed's rules (error.rule names it)"},
}

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True)
class _Declared:
    method: str  # an APIRouter decorator: get, post, put, patch, delete, websocket
    path: str
    kwargs: dict[str, Any]
    endpoint: Callable[..., Any]


class Routes:
    """The routes as declared, put on a router when one is wanted.

    The served router documents no response models: FastAPI builds a pydantic field for every
    documented response of every route (the five error answers and the success: ~240 fields), once
    at import and again at the first request, which cost ~10 s when an L1's daemon starts under
    TCG. The OpenAPI document comes from a second router made from the same declarations with
    the models (``router(documented=True)``), built only when the document is asked for.
    """

    def __init__(self) -> None:
        self.declared: list[_Declared] = []

    def _declare(self, method: str, path: str, kwargs: dict[str, Any]) -> Callable[[_F], _F]:
        def decorate(endpoint: _F) -> _F:
            self.declared.append(_Declared(method, path, kwargs, endpoint))
            return endpoint
        return decorate

    def get(self, path: str, **kwargs: Any) -> Callable[[_F], _F]:
        return self._declare("get", path, kwargs)

    def post(self, path: str, **kwargs: Any) -> Callable[[_F], _F]:
        return self._declare("post", path, kwargs)

    def put(self, path: str, **kwargs: Any) -> Callable[[_F], _F]:
        return self._declare("put", path, kwargs)

    def patch(self, path: str, **kwargs: Any) -> Callable[[_F], _F]:
        return self._declare("patch", path, kwargs)

    def delete(self, path: str, **kwargs: Any) -> Callable[[_F], _F]:
        return self._declare("delete", path, kwargs)

    def websocket(self, path: str, **kwargs: Any) -> Callable[[_F], _F]:
        return self._declare("websocket", path, kwargs)

    def router(self, documented: bool) -> APIRouter:
        router = APIRouter(prefix="/v1", responses=_responses(ERRORS, documented))
        for route in self.declared:
            kwargs = dict(route.kwargs)
            if "responses" in kwargs:
                kwargs["responses"] = _responses(kwargs["responses"], documented)
            getattr(router, route.method)(route.path, **kwargs)(route.endpoint)
        return router


def _responses(responses: dict[int | str, dict[str, Any]], documented: bool) -> dict[int | str, dict[str, Any]]:
    if documented:
        return responses
    return {code: {k: v for k, v in answer.items() if k != "model"} for code, answer in responses.items()}


router = Routes()


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VMNew(Body):
    name: str
    vcpus: int = 1
    memory: int = Field(512 << 20, description="bytes")
    nested: bool = False
    image: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    append: str = ""
    run_script: str | None = None
    config_version: str | None = None
    switches: list[str] = []
    host: str | None = Field(None, description="a libvirt host, or 'auto' (placement); none: this machine")
    maximum: int | None = Field(None, description="libvirt host: bytes a running VM can be given")
    disk: str | None = Field(None, description="libvirt host: a disk image file on that host")
    network: str | None = Field(None, description="libvirt host: a libvirt network")
    generation: int = Field(1, description="disk-image VMs: 1 = BIOS (SeaBIOS), 2 = UEFI (OVMF), as in Hyper-V")
    secure_boot: bool = Field(False, description="generation 2: UEFI secure boot")
    iso: str | None = Field(None, description="disk-image VMs: installer media (a file on the server's host)")
    disk_size: int | None = Field(None, description="disk-image VMs: grow the root disk to this many bytes")
    user: str | None = Field(None, description="cloud-init: the user to create (default: debian)")
    ssh_key: str | None = Field(None, description="cloud-init: a public key file on the server's host")
    no_ssh_key: bool = Field(False, description="cloud-init: do not add the server user's default public key")
    hostname: str | None = Field(None, description="cloud-init: the guest's hostname")
    cloud_init: str | None = Field(None, description="cloud-init: a user-data file on the server's host")


class HostNew(Body):
    name: str
    uri: str


class Move(Body):
    host: str


class Stop(Body):
    turn_off: bool = False
    timeout: float = 30.0


class Processor(Body):
    count: int | None = None
    nested: bool | None = None


class Memory(Body):
    startup: int | None = None
    dynamic: bool | None = None
    minimum: int | None = None
    maximum: int | None = None
    buffer: int | None = None


class Exec(Body):
    argv: list[str]
    timeout: float = 120.0
    stdin_b64: str | None = None


class ImageBuild(Body):
    force: bool = False
    release: str | None = Field(default=None, description="debian: the Debian release (default: bookworm)")
    packages: list[str] = Field(default=[], description="debian: more packages")
    size: int | None = Field(default=None, description="debian: the disk's size in bytes (default: 8 GiB)")
    image_name: str | None = Field(default=None, description="debian: the image's name (default: debian-RELEASE)")


class ImageImport(Body):
    path: str = Field(description="a qcow2 or raw image file on the server's host (absolute path)")
    name: str | None = Field(default=None, description="the image's name (default: from the file name)")


class DiskNew(Body):
    name: str
    size: int = Field(description="bytes")


class DiskSize(Body):
    size: int = Field(description="bytes; disks only grow")


class CheckpointNew(Body):
    name: str


class SwitchNew(Body):
    name: str
    type: SwitchType
    uplink: str | None = Field(None, description="external: the interface to enslave")
    move_addresses: bool = Field(False, description="external: move the uplink's addresses and routes onto the switch")


class SwitchAddress(Body):
    address: str = Field(description="ADDR/PREFIX, e.g. 192.168.100.1/24")


class AdapterNew(Body):
    switch: str
    mac: str | None = None
    name: str | None = None


class AdapterSet(Body):
    """What is not given stays as it is."""

    mac_spoofing: bool | None = None
    router_guard: bool | None = None
    dhcp_guard: bool | None = None


class NatNew(Body):
    name: str
    switch: str | None = Field(None, description="this machine's internal switch with an address in the prefix")
    host: str | None = Field(None, description="or a libvirt host: a libvirt NAT network there")
    prefix: str = Field(description="CIDR, e.g. 192.168.100.0/24")
    dhcp: bool = Field(False, description="serve DHCP and DNS on the switch (dnsmasq)")


def _json(result: Any, status: int = 200) -> JSONResponse:
    """A service result as JSON, straight: FastAPI's jsonable_encoder would walk every value again
    (250 ms for a list of 1,000 VMs on a loaded 2-core machine; json.dumps takes 10 ms)."""
    return JSONResponse(to_json(result), status_code=status)


def _settings(request: Request) -> Any:
    return request.app.state.settings


def _runtime(request: Request) -> Any:
    return request.app.state.runtime


# -- host ----------------------------------------------------------------------------------------
@router.get("/host", responses=_doc(HostReport))
def host(request: Request) -> Any:
    with _settings(request).service() as s:
        return _json(s.host_check())


# -- libvirt hosts (issue 12) ---------------------------------------------------------------------
@router.get("/hosts", responses=_doc(list[HostInfo]))
def host_list(request: Request) -> Any:
    with _settings(request).service() as s:
        return _json(s.host_list())


@router.post("/hosts", status_code=201, responses=_doc(HostInfo, 201))
def host_add(request: Request, body: HostNew) -> Any:
    with _settings(request).service() as s:
        return _json(s.host_add(body.name, body.uri), 201)


@router.get("/hosts/{name}", responses=_doc(HostInfo))
def host_show(request: Request, name: str) -> Any:
    with _settings(request).service() as s:
        return _json(s.host_show(name))


@router.delete("/hosts/{name}", status_code=204)
def host_remove(request: Request, name: str) -> Response:
    with _settings(request).service() as s:
        s.host_remove(name)
    return Response(status_code=204)


@router.post("/vms/{name}/move", status_code=202, responses=_doc(OperationOut, 202))
def vm_move(request: Request, name: str, body: Move) -> Any:
    _known(request, name)
    return _runtime(request).operations.submit(
        f"move vm '{name}' to host '{body.host}'", lambda s, op: s.vm_move(name, body.host, op.progress), vm=name)


# -- VMs -----------------------------------------------------------------------------------------
@router.get("/vms", responses=_doc(list[VMInfo]))
def vm_list(request: Request) -> Any:
    with _settings(request).service() as s:
        return _json(s.vm_list())


_GUEST_FIELDS = ("generation", "secure_boot", "iso", "disk_size", "user", "ssh_key", "no_ssh_key", "hostname",
                 "cloud_init")


def _path(value: str | None) -> Path | None:
    """A file named in a request: a path on the server's host (no NUL: the OS cannot name it)."""
    if value and "\x00" in value:
        raise InvalidInput("a file path contains a NUL character", hint="give the file's path on the server's host")
    return Path(value) if value else None


@router.post("/vms", status_code=201, responses=_doc(NewVM, 201))
def vm_new(request: Request, body: VMNew) -> Any:
    """A VM: the appliance, the nested host or a kernel, a VM on a libvirt host, or a disk-image VM
    (an image of GET /images/store, or installer media), with its cloud-init fields."""
    fields = body.model_dump()
    guest_fields = {k: fields.pop(k) for k in _GUEST_FIELDS}
    spec = VMSpec(**{**fields, "switches": tuple(body.switches)})
    guest = GuestSpec(generation=guest_fields["generation"], secure_boot=guest_fields["secure_boot"],
                      iso=_path(guest_fields["iso"]), disk_size=guest_fields["disk_size"], user=guest_fields["user"],
                      ssh_key=_path(guest_fields["ssh_key"]), no_ssh_key=guest_fields["no_ssh_key"],
                      hostname=guest_fields["hostname"], cloud_init=_path(guest_fields["cloud_init"]))
    with _settings(request).service() as s:
        result = s.vm_new_request(spec, guest)
    _runtime(request).events.publish("vm", {"vm": spec.name, "action": "created"})
    return _json(result, 201)


@router.get("/vms/{name}", responses=_doc(VMInfo))
def vm_show(request: Request, name: str) -> Any:
    with _settings(request).service() as s:
        return _json(s.vm_show(name))


@router.delete("/vms/{name}", status_code=204)
def vm_remove(request: Request, name: str, force: bool = False) -> Response:
    with _settings(request).service() as s:
        s.vm_remove(name, force=force)
    _runtime(request).events.publish("vm", {"vm": name, "action": "removed"})
    return Response(status_code=204)


def _known(request: Request, name: str) -> None:
    """404 (or 400) now rather than an operation that fails at once (a VM here or on a libvirt host)."""
    with _settings(request).service() as s:
        s.vm_show(name)


@router.post("/vms/{name}/start", status_code=202, responses=_doc(OperationOut, 202))
def vm_start(request: Request, name: str) -> Any:
    _known(request, name)
    return _runtime(request).operations.submit(f"start vm '{name}'", lambda s, op: s.vm_start(name), vm=name)


@router.post("/vms/{name}/stop", status_code=202, responses=_doc(OperationOut, 202))
def vm_stop(request: Request, name: str, body: Stop | None = None) -> Any:
    body = body or Stop()
    _known(request, name)
    return _runtime(request).operations.submit(
        f"stop vm '{name}'", lambda s, op: s.vm_stop(name, turn_off=body.turn_off, timeout=body.timeout), vm=name)


@router.post("/vms/{name}/save", status_code=202, responses=_doc(OperationOut, 202))
def vm_save(request: Request, name: str) -> Any:
    _known(request, name)
    return _runtime(request).operations.submit(f"save vm '{name}'", lambda s, op: s.vm_save(name), vm=name)


@router.patch("/vms/{name}/processor", responses=_doc(ProcessorResult))
def vm_processor(request: Request, name: str, body: Processor) -> Any:
    with _settings(request).service() as s:
        return _json(s.vm_set_processor(name, count=body.count, nested=body.nested))


@router.patch("/vms/{name}/memory", responses=_doc(MemoryResult))
def vm_memory(request: Request, name: str, body: Memory) -> Any:
    with _settings(request).service() as s:
        return _json(s.vm_set_memory(name, MemoryChange(**body.model_dump())))


@router.post("/vms/{name}/upgrade", responses=_doc(VMInfo))
def vm_upgrade(request: Request, name: str) -> Any:
    with _settings(request).service() as s:
        return _json(s.vm_upgrade(name))


@router.post("/vms/{target:path}/exec", responses=_doc(ExecResult))
def vm_exec(request: Request, target: str, body: Exec) -> Any:
    """Run a command in the guest (TARGET may be a path such as l1/l2); output base64."""
    with _settings(request).service() as s:
        return _json(s.vm_exec(target, body.argv, timeout=body.timeout))


@router.get("/vms/{name}/log", responses={200: {"content": {"application/octet-stream": {}}, "description": "bytes"}})
def vm_log(request: Request, name: str, tail: int | None = Query(None, ge=0, le=1 << 30),
           until: str | None = None, timeout: float | None = Query(None, gt=0, le=86400)) -> Response:
    """The serial console's output (the last `tail` bytes); with `until`, wait for that text."""
    with _settings(request).service() as s:
        data = b"".join(s.vm_log(name, until=until, timeout=timeout, tail=tail))
    return Response(data, media_type="application/octet-stream")


@router.websocket("/vms/{name}/console")
async def vm_console(websocket: WebSocket, name: str) -> None:
    """The serial console, both ways: binary frames in and out."""
    settings = websocket.app.state.settings
    if settings.require_token:
        from . import tokens

        token = websocket.query_params.get("token") or websocket.headers.get("authorization", "").partition(" ")[2]
        if not tokens.valid(settings.home, token.strip()):
            await websocket.close(code=4401)
            return
    try:
        with settings.service() as s:
            sock = s.vm_console_socket(name)
    except NestorError as err:
        await websocket.accept()
        await websocket.send_json({"error": err.to_json()})
        await websocket.close(code=4404 if err.kind == "not_found" else 4409)
        return
    await websocket.accept()
    reader, writer = await asyncio.open_unix_connection(str(sock))

    async def guest_to_client() -> None:
        while data := await reader.read(4096):
            await websocket.send_bytes(data)

    pump = asyncio.create_task(guest_to_client())
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("bytes") or (message.get("text") or "").encode()
            writer.write(data)
            await writer.drain()
    except WebSocketDisconnect:
        pass
    finally:
        pump.cancel()
        writer.close()


# -- tree, images --------------------------------------------------------------------------------
@router.get("/tree", responses=_doc(Tree))
def tree(request: Request, timeout: float = Query(30.0, gt=0, le=86400)) -> Any:
    with _settings(request).service() as s:
        return _json(s.tree(timeout=timeout))


@router.get("/images", responses=_doc(list[ImageInfo]))
def image_list(request: Request) -> Any:
    with _settings(request).service() as s:
        return _json(s.image_list())


@router.post("/images/{name}/build", status_code=202, responses=_doc(OperationOut, 202))
def image_build(request: Request, name: str, body: ImageBuild | None = None) -> Any:
    """Build (or reuse) appliance, nested-host or debian; debian takes release, packages, size and
    image_name (the operation's result is then the stored image)."""
    body = body or ImageBuild()
    force = body.force
    if name == "debian":
        from ..images.debian import DEFAULT_RELEASE, DEFAULT_SIZE, DebianRequest

        wanted = DebianRequest(release=body.release or DEFAULT_RELEASE, packages=tuple(body.packages),
                               size=DEFAULT_SIZE if body.size is None else body.size, name=body.image_name)
        with _settings(request).service() as s:
            debian = s.image_check_debian(wanted)
        return _runtime(request).operations.submit(
            f"build image '{debian.image_name}'", lambda s, op: s.image_build_debian(debian, op.progress, force=force))
    if body.release or body.packages or body.size is not None or body.image_name:
        raise InvalidInput("release, packages, size and image_name are for the debian image",
                           hint=f"POST /v1/images/debian/build, or only force for '{name}'")
    return _runtime(request).operations.submit(
        f"build image '{name}'", lambda s, op: s.image_build(name, op.progress, force=force))


@router.get("/images/store", responses=_doc(list[StoredImageInfo]))
def image_store_list(request: Request) -> Any:
    """The disk images (built from Debian packages or imported): format, sizes, the VMs using them."""
    with _settings(request).service() as s:
        return _json(s.image_store_list())


@router.post("/images/store", status_code=202, responses=_doc(OperationOut, 202))
def image_import(request: Request, body: ImageImport) -> Any:
    """Import a qcow2 or raw file of the server's host (qemu-img checks: no backing or data file,
    a known format, a sane size); stored as qcow2. An operation with progress."""
    path = _path(body.path) or Path()
    if not path.is_absolute():
        raise InvalidInput(f"path '{body.path[:200]}' is not absolute", hint="give the file's full path on the server's host")
    return _runtime(request).operations.submit(
        f"import image '{body.path[:200]}'", lambda s, op: s.image_import(path, body.name, op.progress))


@router.delete("/images/store/{name}", status_code=204)
def image_remove(request: Request, name: str) -> Response:
    """Remove a disk image (refused while a VM uses it)."""
    with _settings(request).service() as s:
        s.image_remove(name)
    return Response(status_code=204)


# -- disk-image VMs: disks, checkpoints, address ---------------------------------------------------
@router.get("/vms/{name}/disks", responses=_doc(list[DiskInfo]))
def disk_list(request: Request, name: str) -> Any:
    with _settings(request).service() as s:
        return _json(s.vm_disk_list(name))


@router.post("/vms/{name}/disks", status_code=201, responses=_doc(DiskInfo, 201))
def disk_add(request: Request, name: str, body: DiskNew) -> Any:
    """An empty qcow2 data disk (while the VM is off)."""
    with _settings(request).service() as s:
        result = s.vm_disk_add(name, body.name, body.size)
    _runtime(request).events.publish("vm", {"vm": name, "action": "disk added", "disk": body.name})
    return _json(result, 201)


@router.patch("/vms/{name}/disks/{disk}", responses=_doc(DiskResize))
def disk_resize(request: Request, name: str, disk: str, body: DiskSize) -> Any:
    """Grow a disk; on a running VM online (QMP block_resize: the guest sees it at once)."""
    with _settings(request).service() as s:
        result = s.vm_disk_resize(name, disk, body.size)
    _runtime(request).events.publish("vm", {"vm": name, "action": "disk resized", "disk": disk})
    return _json(result)


@router.delete("/vms/{name}/disks/{disk}", status_code=204)
def disk_remove(request: Request, name: str, disk: str) -> Response:
    with _settings(request).service() as s:
        s.vm_disk_remove(name, disk)
    _runtime(request).events.publish("vm", {"vm": name, "action": "disk removed", "disk": disk})
    return Response(status_code=204)


@router.get("/vms/{name}/checkpoints", responses=_doc(list[CheckpointInfo]))
def checkpoint_list(request: Request, name: str) -> Any:
    with _settings(request).service() as s:
        return _json(s.vm_checkpoint_list(name))


@router.post("/vms/{name}/checkpoints", status_code=202, responses=_doc(OperationOut, 202))
def checkpoint_new(request: Request, name: str, body: CheckpointNew) -> Any:
    """Checkpoint-VM: of a stopped VM its disks, of a running one its disks and memory. Refusals
    (R12-R14 while a hypervisor runs inside, a taken name) answer at once; the work is an operation
    whose result is a CheckpointResult."""
    with _settings(request).service() as s:
        s.vm_checkpoint_check(name, body.name, "new")
    return _runtime(request).operations.submit(
        f"checkpoint '{body.name}' of vm '{name}'", lambda s, op: s.vm_checkpoint_new(name, body.name), vm=name)


@router.post("/vms/{name}/checkpoints/{checkpoint}/apply", status_code=202, responses=_doc(OperationOut, 202))
def checkpoint_apply(request: Request, name: str, checkpoint: str) -> Any:
    """Restore-VMCheckpoint: one with memory to the running VM, one without to the stopped VM."""
    with _settings(request).service() as s:
        s.vm_checkpoint_check(name, checkpoint, "apply")
    return _runtime(request).operations.submit(
        f"apply checkpoint '{checkpoint}' to vm '{name}'", lambda s, op: s.vm_checkpoint_apply(name, checkpoint),
        vm=name)


@router.delete("/vms/{name}/checkpoints/{checkpoint}", status_code=204)
def checkpoint_remove(request: Request, name: str, checkpoint: str) -> Response:
    with _settings(request).service() as s:
        s.vm_checkpoint_remove(name, checkpoint)
    _runtime(request).events.publish("vm", {"vm": name, "action": "checkpoint removed", "checkpoint": checkpoint})
    return Response(status_code=204)


@router.get("/vms/{name}/address", responses=_doc(VMAddress))
def vm_address(request: Request, name: str) -> Any:
    """Where the running VM can be reached (what `vm ssh` connects to) and how it was found:
    the DHCP lease on a nestor NAT switch, the guest agent, or the static address."""
    with _settings(request).service() as s:
        return _json(s.vm_address(name))


# -- network -------------------------------------------------------------------------------------
@router.get("/switches", responses=_doc(list[SwitchInfo]))
def switch_list(request: Request) -> Any:
    with _settings(request).service() as s:
        return _json(s.switch_list())


@router.post("/switches", status_code=201, responses=_doc(SwitchInfo, 201))
def switch_new(request: Request, body: SwitchNew) -> Any:
    with _settings(request).service() as s:
        return _json(s.switch_new(SwitchSpec(body.name, body.type, body.uplink, body.move_addresses)), 201)


@router.get("/switches/{name}", responses=_doc(SwitchDetail))
def switch_show(request: Request, name: str) -> Any:
    with _settings(request).service() as s:
        return _json(s.switch_show(name))


@router.put("/switches/{name}/address", responses=_doc(SwitchInfo))
def switch_set_ip(request: Request, name: str, body: SwitchAddress) -> Any:
    with _settings(request).service() as s:
        return _json(s.switch_set_ip(name, body.address))


@router.delete("/switches/{name}", responses=_doc(SwitchRemoval))
def switch_remove(request: Request, name: str, force: bool = False) -> Any:
    """With `force` also the NAT and the adapters on it (the answer names them)."""
    with _settings(request).service() as s:
        return _json(s.switch_remove(name, force=force))


@router.get("/vms/{vm}/adapters", responses=_doc(list[AdapterInfo]))
def adapter_list(request: Request, vm: str) -> Any:
    with _settings(request).service() as s:
        return _json(s.adapter_list(vm))


@router.post("/vms/{vm}/adapters", status_code=201, responses=_doc(AdapterInfo, 201))
def adapter_add(request: Request, vm: str, body: AdapterNew) -> Any:
    with _settings(request).service() as s:
        return _json(s.adapter_add(vm, AdapterSpec(body.switch, mac=body.mac, name=body.name)), 201)


@router.patch("/vms/{vm}/adapters/{name}", responses=_doc(AdapterInfo))
def adapter_set(request: Request, vm: str, name: str, body: AdapterSet) -> Any:
    with _settings(request).service() as s:
        change = GuardChange(mac_spoofing=body.mac_spoofing, router_guard=body.router_guard, dhcp_guard=body.dhcp_guard)
        return _json(s.adapter_set(vm, name, change))


@router.delete("/vms/{vm}/adapters/{name}", status_code=204)
def adapter_remove(request: Request, vm: str, name: str) -> Response:
    with _settings(request).service() as s:
        s.adapter_remove(vm, name)
    return Response(status_code=204)


@router.get("/nats", responses=_doc(list[NatInfo]))
def nat_list(request: Request) -> Any:
    with _settings(request).service() as s:
        return _json(s.nat_list())


@router.post("/nats", status_code=201, responses=_doc(NatInfo, 201))
def nat_new(request: Request, body: NatNew) -> Any:
    with _settings(request).service() as s:
        return _json(s.nat_new(NatSpec(body.name, body.switch, body.prefix, dhcp=body.dhcp, host=body.host)), 201)


@router.get("/nats/{name}", responses=_doc(NatInfo))
def nat_show(request: Request, name: str) -> Any:
    with _settings(request).service() as s:
        return _json(s.nat_show(name))


@router.delete("/nats/{name}", status_code=204)
def nat_remove(request: Request, name: str) -> Response:
    with _settings(request).service() as s:
        s.nat_remove(name)
    return Response(status_code=204)


# -- operations and events -----------------------------------------------------------------------
@router.get("/operations", responses=_doc(list[OperationOut]))
def operation_list(request: Request) -> Any:
    return _runtime(request).operations.list()


@router.get("/operations/{op_id}", responses=_doc(OperationOut))
def operation_show(request: Request, op_id: str, wait: float = Query(0.0, ge=0, le=3600)) -> Any:
    """One operation; with `wait`, answer once it has ended or `wait` seconds passed."""
    return _runtime(request).operations.get(op_id, wait)


@router.delete("/operations/{op_id}", status_code=202, responses=_doc(OperationOut, 202))
def operation_cancel(request: Request, op_id: str) -> Any:
    return _runtime(request).operations.cancel(op_id)


@router.get("/events", responses={200: {"content": {"text/event-stream": {}},
                                        "description": "events: vm, operation, balancer"}})
async def events(request: Request) -> StreamingResponse:
    """Server-sent events: lifecycle, operation progress, balancer decisions (R7 holds)."""
    stream = _runtime(request).events.subscribe()

    async def gen() -> Any:
        try:
            yield ": nestor events\n\n"
            async for event in stream:
                if await request.is_disconnected():
                    break
                yield event
        finally:
            await stream.aclose()

    return StreamingResponse(gen(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


def register(app: FastAPI, documented: bool = False) -> None:
    """The routes on APP; `documented`: with their response models (for the OpenAPI document)."""
    app.include_router(router.router(documented))

    @app.get("/", include_in_schema=False)
    def root() -> JSONResponse:
        return JSONResponse({"nestor": "v1", "openapi": "/v1/openapi.json"})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
