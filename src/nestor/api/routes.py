"""The API's resources. Each route: parse the request, call the facade, return to_json(result).

Routes are plain `def`: FastAPI runs them in its thread pool, and each opens its own Service.
Long work (start, stop, save, image builds) is an operation (202 + its URL; api/runtime.py).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..errors import NestorError
from ..service.types import MemoryChange, VMSpec, to_json

router = APIRouter(prefix="/v1")


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


class SwitchNew(Body):
    name: str
    type: str
    uplink: str | None = None


class SwitchAddress(Body):
    address: str


class AdapterNew(Body):
    switch: str
    mac: str | None = None
    name: str | None = None


class AdapterSet(Body):
    mac_spoofing: bool


class NatNew(Body):
    name: str
    switch: str
    prefix: str
    dhcp: bool = False


def _settings(request: Request) -> Any:
    return request.app.state.settings


def _runtime(request: Request) -> Any:
    return request.app.state.runtime


def _row(obj: Any) -> dict[str, Any]:
    """A network store object (Switch, Adapter, Nat) with its derived names."""
    data: dict[str, Any] = to_json(obj)
    data.pop("id", None)
    for derived in ("bridge", "tap"):
        if hasattr(obj, derived):
            data[derived] = getattr(obj, derived)
    return {k: v for k, v in data.items() if not k.endswith("_id")}


# -- host ----------------------------------------------------------------------------------------
@router.get("/host")
def host(request: Request) -> Any:
    with _settings(request).service() as s:
        return to_json(s.host_check())


# -- libvirt hosts (issue 12) ---------------------------------------------------------------------
@router.get("/hosts")
def host_list(request: Request) -> Any:
    with _settings(request).service() as s:
        return to_json(s.host_list())


@router.post("/hosts", status_code=201)
def host_add(request: Request, body: HostNew) -> Any:
    with _settings(request).service() as s:
        return to_json(s.host_add(body.name, body.uri))


@router.get("/hosts/{name}")
def host_show(request: Request, name: str) -> Any:
    with _settings(request).service() as s:
        return to_json(s.host_show(name))


@router.delete("/hosts/{name}", status_code=204)
def host_remove(request: Request, name: str) -> Response:
    with _settings(request).service() as s:
        s.host_remove(name)
    return Response(status_code=204)


@router.post("/vms/{name}/move", status_code=202)
def vm_move(request: Request, name: str, body: Move) -> Any:
    return _runtime(request).operations.submit(
        f"move vm '{name}' to host '{body.host}'", lambda s, op: s.vm_move(name, body.host, op.progress), vm=name)


# -- VMs -----------------------------------------------------------------------------------------
@router.get("/vms")
def vm_list(request: Request) -> Any:
    with _settings(request).service() as s:
        return to_json(s.vm_list())


@router.post("/vms", status_code=201)
def vm_new(request: Request, body: VMNew) -> Any:
    spec = VMSpec(**{**body.model_dump(), "switches": tuple(body.switches)})
    with _settings(request).service() as s:
        result = s.vm_new(spec)
    _runtime(request).events.publish("vm", {"vm": spec.name, "action": "created"})
    return to_json(result)


@router.get("/vms/{name}")
def vm_show(request: Request, name: str) -> Any:
    with _settings(request).service() as s:
        return to_json(s.vm_show(name))


@router.delete("/vms/{name}", status_code=204)
def vm_remove(request: Request, name: str, force: bool = False) -> Response:
    with _settings(request).service() as s:
        s.vm_remove(name, force=force)
    _runtime(request).events.publish("vm", {"vm": name, "action": "removed"})
    return Response(status_code=204)


@router.post("/vms/{name}/start", status_code=202)
def vm_start(request: Request, name: str) -> Any:
    return _runtime(request).operations.submit(f"start vm '{name}'", lambda s, op: s.vm_start(name), vm=name)


@router.post("/vms/{name}/stop", status_code=202)
def vm_stop(request: Request, name: str, body: Stop | None = None) -> Any:
    body = body or Stop()
    return _runtime(request).operations.submit(
        f"stop vm '{name}'", lambda s, op: s.vm_stop(name, turn_off=body.turn_off, timeout=body.timeout), vm=name)


@router.post("/vms/{name}/save", status_code=202)
def vm_save(request: Request, name: str) -> Any:
    return _runtime(request).operations.submit(f"save vm '{name}'", lambda s, op: s.vm_save(name), vm=name)


@router.patch("/vms/{name}/processor")
def vm_processor(request: Request, name: str, body: Processor) -> Any:
    with _settings(request).service() as s:
        return to_json(s.vm_set_processor(name, count=body.count, nested=body.nested))


@router.patch("/vms/{name}/memory")
def vm_memory(request: Request, name: str, body: Memory) -> Any:
    with _settings(request).service() as s:
        return to_json(s.vm_set_memory(name, MemoryChange(**body.model_dump())))


@router.post("/vms/{name}/upgrade")
def vm_upgrade(request: Request, name: str) -> Any:
    with _settings(request).service() as s:
        return to_json(s.vm_upgrade(name))


@router.post("/vms/{target:path}/exec")
def vm_exec(request: Request, target: str, body: Exec) -> Any:
    """Run a command in the guest (TARGET may be a path such as l1/l2); output base64."""
    with _settings(request).service() as s:
        return to_json(s.vm_exec(target, body.argv, timeout=body.timeout))


@router.get("/vms/{name}/log")
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
@router.get("/tree")
def tree(request: Request, timeout: float = Query(30.0, gt=0, le=86400)) -> Any:
    with _settings(request).service() as s:
        return to_json(s.tree(timeout=timeout))


@router.get("/images")
def image_list(request: Request) -> Any:
    with _settings(request).service() as s:
        return to_json(s.image_list())


@router.post("/images/{name}/build", status_code=202)
def image_build(request: Request, name: str, body: ImageBuild | None = None) -> Any:
    force = bool(body and body.force)
    return _runtime(request).operations.submit(
        f"build image '{name}'", lambda s, op: s.image_build(name, op.progress, force=force))


# -- network -------------------------------------------------------------------------------------
@router.get("/switches")
def switch_list(request: Request) -> Any:
    with _settings(request).service() as s:
        return s.network.switch_list()


@router.post("/switches", status_code=201)
def switch_new(request: Request, body: SwitchNew) -> Any:
    with _settings(request).service() as s:
        return _row(s.network.switch_new(body.name, body.type, body.uplink))


@router.get("/switches/{name}")
def switch_show(request: Request, name: str) -> Any:
    with _settings(request).service() as s:
        return s.network.switch_show(name)


@router.put("/switches/{name}/address")
def switch_set_ip(request: Request, name: str, body: SwitchAddress) -> Any:
    with _settings(request).service() as s:
        return _row(s.network.switch_set_ip(name, body.address))


@router.delete("/switches/{name}")
def switch_remove(request: Request, name: str, force: bool = False) -> Any:
    with _settings(request).service() as s:
        return {"removed": s.network.switch_remove(name, force=force)}


@router.get("/vms/{vm}/adapters")
def adapter_list(request: Request, vm: str) -> Any:
    with _settings(request).service() as s:
        return s.network.adapter_list(vm)


@router.post("/vms/{vm}/adapters", status_code=201)
def adapter_add(request: Request, vm: str, body: AdapterNew) -> Any:
    with _settings(request).service() as s:
        return _row(s.network.adapter_add(vm, body.switch, mac=body.mac, name=body.name))


@router.patch("/vms/{vm}/adapters/{name}")
def adapter_set(request: Request, vm: str, name: str, body: AdapterSet) -> Any:
    with _settings(request).service() as s:
        return _row(s.network.adapter_set(vm, name, body.mac_spoofing))


@router.delete("/vms/{vm}/adapters/{name}", status_code=204)
def adapter_remove(request: Request, vm: str, name: str) -> Response:
    with _settings(request).service() as s:
        s.network.adapter_remove(vm, name)
    return Response(status_code=204)


@router.get("/nats")
def nat_list(request: Request) -> Any:
    with _settings(request).service() as s:
        return s.network.nat_list()


@router.post("/nats", status_code=201)
def nat_new(request: Request, body: NatNew) -> Any:
    with _settings(request).service() as s:
        return _row(s.network.nat_new(body.name, body.switch, body.prefix, dhcp=body.dhcp))


@router.delete("/nats/{name}", status_code=204)
def nat_remove(request: Request, name: str) -> Response:
    with _settings(request).service() as s:
        s.network.nat_remove(name)
    return Response(status_code=204)


# -- operations and events -----------------------------------------------------------------------
@router.get("/operations")
def operation_list(request: Request) -> Any:
    return _runtime(request).operations.list()


@router.get("/operations/{op_id}")
def operation_show(request: Request, op_id: str, wait: float = Query(0.0, ge=0, le=3600)) -> Any:
    """One operation; with `wait`, answer once it has ended or `wait` seconds passed."""
    return _runtime(request).operations.get(op_id, wait)


@router.delete("/operations/{op_id}", status_code=202)
def operation_cancel(request: Request, op_id: str) -> Any:
    return _runtime(request).operations.cancel(op_id)


@router.get("/events")
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


def register(app: FastAPI) -> None:
    app.include_router(router)

    @app.get("/", include_in_schema=False)
    def root() -> JSONResponse:
        return JSONResponse({"nestor": "v1", "openapi": "/v1/openapi.json"})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
