"""The API's routes on FastAPI: an endpoint for every entry of the one table (api/handlers.py),
plus the two streams only FastAPI serves (events, the serial console).

Each endpoint is the table's handler behind a signature FastAPI reads (path parameters, the
body as a pydantic model made from the handler's dataclass body, query parameters with their
bounds); the handler's Answer becomes a Response. The plain dispatcher of an L1's channel
(table.dispatch) calls the same handlers.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import inspect
import operator
import os
import types
import typing
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi import Path as FastPath
from fastapi import Query as FastQuery
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictFloat,
    StrictStr,
    create_model,
)

from ..errors import InvalidInput, NestorError
from ..service.audit import CHANNEL, Actor, acting
from ..warm_start import VIA_HEADER
from . import handlers
from . import rules as api_rules
from .table import API_PREFIX, Answer, Body, Ctx, Route, body_fields


class ErrorBody(BaseModel):
    """The one error envelope's body (errors.py): `kind` is the machine-readable code."""

    kind: str = Field(description="invalid_input | not_found | conflict | wrong_state | policy | cancelled | host | "
                                  "image | engine | guest | unauthorized | forbidden | internal")
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


class RecentEventsOut(BaseModel):
    """The ring of recent events (api/runtime.py): read again with after = the last `id` taken
    (or `last` when there were none); a new `epoch` means the daemon started again (from 0)."""

    epoch: str = Field(description="this daemon's run")
    first: int | None = Field(description="the oldest number the ring still holds (null: empty)")
    last: int = Field(description="the newest number given so far")
    events: list[dict[str, Any]] = Field(description="as /v1/events sends them: id, type, time, and path, at, vm ...")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorEnvelope, "description": "invalid input"},
    401: {"model": ErrorEnvelope, "description": "no valid bearer token (TCP only)"},
    403: {"model": ErrorEnvelope, "description": "a foreign Host or Origin, or a file outside the server's files directory"},
    404: {"model": ErrorEnvelope, "description": "not found"},
    409: {"model": ErrorEnvelope, "description": "wrong state or conflict"},
    422: {"model": ErrorEnvelope, "description": "refused by one of the seed's rules (error.rule names it)"},
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


_MODELS: dict[type[Body], type[BaseModel]] = {}
def _whole(value: Any) -> Any:
    """A JSON number with no fraction is an integer (JSON Schema: 1.0 is one); any other float stays
    a float, and strict int refuses it (as it refuses true and "2")."""
    return int(value) if type(value) is float and value.is_integer() else value


WholeInt = typing.Annotated[int, Strict(), BeforeValidator(_whole)]
_STRICT: dict[Any, Any] = {int: WholeInt, bool: StrictBool, str: StrictStr, float: StrictFloat}


def strict(kind: Any) -> Any:
    """A body field's type with no coercion: `"vcpus": true` or `"vcpus": "2"` is refused, not read
    as 1 or 2 (pydantic's lax mode would), exactly as the plain dispatcher (table._plain) takes only
    the JSON type itself. An int is still a float; enums take their values."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return functools.reduce(operator.or_, [strict(a) for a in args])
    if origin is list:
        return list[strict(args[0])]  # type: ignore[misc]
    return _STRICT.get(kind, kind)


_FIELD_RULES = {"pattern", "ge", "le", "multiple_of", "min_length", "max_length"}


def _ruled(kind: Any, rules: dict[str, Any]) -> Any:
    """KIND (strict) with a field's rules (table.described) that pydantic checks and documents."""
    numeric = {k: v for k, v in rules.items() if k in ("ge", "le", "multiple_of")}
    if numeric and kind in (int, int | None):  # the bounds on the int itself, before JSON's 1.0 becomes 1
        whole = typing.Annotated[int, Strict(), Field(**numeric), BeforeValidator(_whole)]
        return whole if kind is int else whole | None
    kind = strict(kind)
    if "enum" in rules:
        words = typing.Literal[tuple(rules["enum"])]  # type: ignore[valid-type]
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        return words | None if origin in (typing.Union, types.UnionType) and type(None) in args else words
    items = rules.get("items")
    if items:
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        nullable = origin in (typing.Union, types.UnionType) and type(None) in args
        (inner,) = [a for a in args if a is not type(None)] if nullable else (kind,)
        item = typing.get_args(inner)[0]
        inner = list[typing.Annotated[item, Field(**{k: v for k, v in items.items() if k in _FIELD_RULES})]]  # type: ignore[valid-type]
        kind = inner | None if nullable else inner
    return kind


def model_of(body: type[Body]) -> type[BaseModel]:
    """The pydantic model of a table body: same name, fields, defaults, descriptions and rules."""
    if body not in _MODELS:
        fields: dict[str, Any] = {}
        for f in body_fields(body):
            default = ... if f.required else f.make_default()
            rules = {k: v for k, v in f.rules.items() if k in _FIELD_RULES
                     and not (f.kind in (int, int | None) and k in ("ge", "le", "multiple_of"))}
            if "max_items" in f.rules:
                rules["max_length"] = f.rules["max_items"]
            if "min_items" in f.rules:
                rules["min_length"] = f.rules["min_items"]
            kind = _ruled(f.kind, f.rules)
            if f.description or rules:
                fields[f.name] = (kind, Field(default, description=f.description, **rules))
            else:
                fields[f.name] = (kind, default)
        base: type[_Model] = _Model
        if body.combined:
            base = typing.cast(type[_Model], type(f"{body.__name__}Rules", (_Model,), {
                "model_config": ConfigDict(extra="forbid", json_schema_extra={"allOf": list(body.combined)}),
                "__module__": __name__}))
        _MODELS[body] = create_model(body.__name__, __base__=base, __doc__=body.__doc__, __module__=__name__,
                                     **fields)
    return _MODELS[body]


def _model(model: Any) -> Any:
    if isinstance(model, handlers.Later):
        return model.resolve()
    if model is handlers.Operation:
        return OperationOut
    if typing.get_origin(model) is list and typing.get_args(model) == (handlers.Operation,):
        return list[OperationOut]
    if model is handlers.RecentEvents:
        return RecentEventsOut
    return model


def _responses(responses: dict[int | str, dict[str, Any]], documented: bool) -> dict[int | str, dict[str, Any]]:
    if documented:
        return {code: {k: _model(v) if k == "model" else v for k, v in answer.items()}
                for code, answer in responses.items()}
    return {code: {k: v for k, v in answer.items() if k != "model"} for code, answer in responses.items()}


def response(answer: Answer) -> Response:
    return Response(answer.body, status_code=answer.status, media_type=answer.media_type, headers=answer.headers)


def actor_of(request: Request) -> Actor:
    """Who asks (the audit log): the bearer token's name over TCP; over the unix socket the peer's
    uid (SO_PEERCRED, api/peer.py), or the channel when the peer is this daemon itself (an L1's
    channel forwards the host's requests to its own socket); else unknown ("api")."""
    from . import peer

    if request.app.state.settings.require_token:
        return Actor("tcp", token=request.scope.get("nestor.token"))
    cred = request.scope.get(peer.SCOPE_KEY)
    if cred is None:
        return Actor("api")
    pid, uid, _gid = cred
    if pid == os.getpid():
        return CHANNEL
    # `nestor vm start` through the warm daemon (nestor/warm_start.py) says it is the CLI: the
    # audit row reads as the in-process CLI's would (uid and pid are still the kernel's).
    via = "cli" if request.headers.get(VIA_HEADER) == "cli" else "unix"
    return Actor(via, uid=uid, pid=pid)


def endpoint(route: Route) -> Callable[..., Response]:
    """The table's handler behind the signature FastAPI reads for this route."""
    handler, model = route.handler, model_of(route.body) if route.body is not None else None

    def call(request: Request, **kwargs: Any) -> Response:
        kwargs.pop("at", None)  # a level below was the forwarding layer's (api/forward.py); '' is this level
        if model is not None:
            given = kwargs.get("body")
            kwargs["body"] = None if given is None else route.body(**{  # type: ignore[misc]
                name: getattr(given, name) for name in model.model_fields})
        with acting(actor_of(request)):
            return response(handler(Ctx(request.app.state.settings, request.app.state.runtime), **kwargs))

    params = [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)]
    for name in route.params:
        rules = route.param_rules(name)
        kind: Any = str
        if "enum" in rules:
            kind = typing.Literal[tuple(rules["enum"])]
        elif rules:
            kind = typing.Annotated[str, FastPath(**rules)]
        params.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=kind))
    if model is not None:
        params.append(inspect.Parameter("body", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        annotation=model if route.body_required else model | None,
                                        **({} if route.body_required else {"default": None})))
    for name, (kind, q) in route.query.items():
        bounded = any(v is not None for v in (q.ge, q.gt, q.le, q.pattern, q.max_length))
        default = FastQuery(q.default, ge=q.ge, gt=q.gt, le=q.le, pattern=q.pattern,
                            max_length=q.max_length) if bounded else q.default
        params.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=kind, default=default))
    params.append(AT_PARAMETER)
    # Any where a model documents the answer (the document names its schema after the route), as declared before
    documented = any("model" in answer for answer in route.responses.values())
    call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        params, return_annotation=Any if documented else Response)
    call.__name__ = call.__qualname__ = handler.__name__
    call.__doc__ = handler.__doc__
    return call


AT_DESCRIPTION = ("the level that answers: a VM path such as l1/l2 (the nestor inside l2 inside l1, through each "
                  "VM's channel); none or empty: this one")
AT_PARAMETER = inspect.Parameter("at", inspect.Parameter.KEYWORD_ONLY, annotation=str | None,
                                 default=FastQuery(None, description=AT_DESCRIPTION, max_length=4096, pattern=api_rules.LEVEL))


class Routes:
    """The table's routes on a router when one is wanted.

    The served router documents no response models: FastAPI builds a pydantic field for every
    documented response of every route (the five error answers and the success: ~240 fields), once
    at import and again at the first request, which cost ~10 s when an L1's daemon starts under
    TCG. The OpenAPI document comes from a second router made from the same declarations with
    the models (``router(documented=True)``), built only when the document is asked for.
    """

    def router(self, documented: bool) -> APIRouter:
        router = APIRouter(prefix=API_PREFIX, responses=_responses(ERRORS, documented))
        for route in handlers.table.routes:
            getattr(router, route.method)(route.path, status_code=route.status_code,
                                          responses=_responses(route.responses, documented))(endpoint(route))
        router.add_api_websocket_route("/vms/{name}/console", vm_console)
        router.get("/events", responses={200: {"content": {"text/event-stream": {}},
                                               "description": "events: vm, operation, lab, balancer, level"}})(events)
        return router


router = Routes()


async def vm_console(websocket: WebSocket, name: str,
                     at: str | None = FastQuery(None, description=AT_DESCRIPTION, max_length=4096,
                                                pattern=api_rules.LEVEL)) -> None:
    """The serial console, both ways: binary frames in and out."""
    settings = websocket.app.state.settings
    if settings.require_token:
        from . import tokens

        token = websocket.query_params.get("token") or websocket.headers.get("authorization", "").partition(" ")[2]
        if not tokens.valid(settings.home, token.strip()):
            await websocket.close(code=4401)
            return
    try:
        if at:
            raise InvalidInput(f"the console of vm '{at}/{name}' is not forwarded from this level yet",
                               hint=f"nestor vm exec {at} -- nestor vm log {name}")
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


async def events(request: Request,
                 at: str | None = FastQuery(None, description=AT_DESCRIPTION, max_length=4096,
                                            pattern=api_rules.LEVEL)) -> StreamingResponse:
    """Server-sent events: lifecycle, operation progress, balancer decisions (R7 holds), of this
    level and of every level below (those with `at`, the level they come from, and `path`, the VM's
    path from here). With `at`: only the events of that level and below it."""
    stream = request.app.state.runtime.events.subscribe(at)

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

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus's text format"}})
    def metrics(request: Request) -> Response:
        """This host's VMs and every nested level's (labelled with their path), the host's nesting
        policy, and the API operations' counts and durations (api/metrics.py)."""
        from . import metrics as metrics_mod

        body, content_type = metrics_mod.render(request.app.state.settings, request.app.state.runtime)
        return Response(body, media_type=content_type)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
