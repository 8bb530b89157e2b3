"""The REST API: FastAPI routes over the service facade, one error envelope.

Every route calls nestor.service.Service and returns its typed result as JSON (service.types.to_json:
sizes in bytes, states as words). Errors: ``{"error": {"kind", "message", "hint", "rule", "resource"}}``
with the status of errors.py's table (400 invalid input, 404 not found, 409 wrong state or
conflict, 422 refused by a seed rule, 5xx only for the host, QEMU, a guest, or a bug).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import ui
from ..errors import InvalidInput, NestorError, Unauthorized
from ..model import validate_name
from . import routes, rules
from .table import STATUS, Settings, bug_answer, error_body

TOKEN_KEY = "nestor.token"  # the ASGI scope's key for the bearer token's name
__all__ = ["STATUS", "Settings", "create_app", "error_response"]

log = logging.getLogger("nestor.api")
log.addHandler(logging.NullHandler())

API_VERSION = "v1"


def error_response(err: NestorError) -> JSONResponse:
    return JSONResponse({"error": err.to_json()}, status_code=STATUS.get(err.kind, 500))


def allowed(app: FastAPI, path: str) -> list[str]:
    """The methods some route of APP answers at PATH (a 405's `Allow`, RFC 9110): all of them, not
    only the first route's, as Starlette would say; HEAD with GET, as Starlette serves it."""
    from starlette.routing import Route

    methods: set[str] = set()
    for route in app.routes:
        if isinstance(route, Route) and route.methods and route.path_regex.match(path):
            methods |= route.methods
    order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    return sorted(methods, key=lambda m: (order.index(m) if m in order else len(order), m))


def method_not_allowed(request: Request, methods: list[str]) -> JSONResponse:
    body = error_body("invalid_input", f"{request.method} {request.url.path}: Method Not Allowed",
                      f"this path answers {', '.join(methods)}; see /v1/openapi.json")
    return JSONResponse({"error": body}, status_code=405, headers={"Allow": ", ".join(methods)})


_KINDS = {"vms": "vm", "switches": "switch", "nats": "nat", "hosts": "host", "images": "image", "disks": "disk",
          "checkpoints": "checkpoint", "adapters": "adapter"}


def _named(path: str, loc: tuple[Any, ...]) -> str:
    """What a name names, for its error: a body's `name` is the collection's (POST /v1/switches: a
    switch), another field is itself (`image`, `host`); a path parameter, the segment before it."""
    field = str(loc[-1]) if loc else "name"
    if field != "name":
        return _KINDS.get(field, field)
    segments = [s for s in path.split("/") if s]
    collections = [s for s in segments if s in _KINDS]
    return _KINDS[collections[-1]] if collections else "vm"


def _own_words() -> dict[str, Any]:
    """Patterns whose refusal the service words better than "should match pattern '…'"."""
    from ..net import addresses
    from ..remote import uri

    return {rules.URI: uri.validate, rules.MAC: addresses.validate_mac, rules.CIDR: addresses.host_address,
            rules.NAT_PREFIX: addresses.parse_prefix}


_OWN_WORDS = _own_words()


def create_app(settings: Settings, runtime: Any = None, documented: bool = False) -> FastAPI:
    """`runtime` is the daemon's shared state (operations, events); None in tests of routes alone.

    The served app's routes carry no response models (routes.Routes says why); its OpenAPI
    document comes from a `documented` twin, made on the first request for it."""
    from . import runtime as rt

    app = FastAPI(title="nestor", version="1", description=__doc__ or "",
                  openapi_url=f"/{API_VERSION}/openapi.json", docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.runtime = runtime or rt.Runtime(settings)

    @app.exception_handler(NestorError)
    async def nestor_error(request: Request, exc: NestorError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        hint = "see /v1/openapi.json"
        pattern = (first.get("ctx") or {}).get("pattern")
        if pattern == rules.NAME and isinstance(first.get("input"), str):  # the service's own words for a name
            try:
                validate_name(first["input"], _named(request.url.path, first.get("loc", ())))
            except NestorError as exc:
                return error_response(exc)
        own = _OWN_WORDS.get(pattern) if isinstance(pattern, str) else None
        if own is not None and isinstance(first.get("input"), str):  # the service's own words (a long pattern)
            try:
                own(first["input"])
            except NestorError as exc:
                return error_response(InvalidInput(exc.message, hint=exc.hint) if exc.kind != "invalid_input" else exc)
        if pattern == rules.FILE:  # a path: say where an API caller's files live
            hint = f"name an absolute path of a file in the server's files directory, {settings.files_dir}"
        body = error_body("invalid_input", f"invalid request: {where}: {first.get('msg', 'invalid')}", hint)
        return JSONResponse({"error": body}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's own answers (no such route, method not allowed) in the one envelope too."""
        if exc.status_code == 405:
            return method_not_allowed(request, allowed(request.app, request.url.path))
        kind = {404: "not_found", 405: "invalid_input"}.get(exc.status_code, "invalid_input")
        body = error_body(kind, f"{request.method} {request.url.path}: {exc.detail}", "see /v1/openapi.json")
        return JSONResponse({"error": body}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return routes.response(bug_answer(exc))

    @app.middleware("http")
    async def levels(request: Request, call_next: Any) -> Response:
        """A request with `at=l1/l2` is that level's to answer (api/forward.py), before any route."""
        from . import forward

        query = request.url.query
        if not forward.wanted(request.url.path, query):
            passed: Response = await call_next(request)
            return passed
        methods = allowed(request.app, request.url.path)
        if methods and request.method not in methods:  # every level serves the same routes: refused here
            return method_not_allowed(request, methods)
        from starlette.concurrency import run_in_threadpool

        body = await request.body()
        answer = await run_in_threadpool(forward.forward, settings, request.method, request.url.path, query,
                                         dict(request.headers), body)
        return routes.response(answer)

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Response:
        if settings.require_token and not ui.serves(request.url.path):  # the UI gates its own pages
            from . import tokens

            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            name = tokens.name_of(settings.home, token.strip()) if scheme.lower() == "bearer" else None
            request.scope[TOKEN_KEY] = name  # who asks, for the audit log (api/routes.py)
            if name is None:
                refused = Unauthorized("a valid bearer token is required",
                                       hint="nestor token new NAME gives one; send it as 'Authorization: Bearer TOKEN'")
                return JSONResponse({"error": refused.to_json()}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        response: Response = await call_next(request)
        return response

    from .guard import Guard

    # Outermost (added last): a foreign Host or Origin is refused before any route or token check.
    app.add_middleware(Guard, names=settings.hosts, any_address=settings.any_address)
    routes.register(app, documented)
    ui.register(app)
    if not documented:
        def openapi() -> dict[str, Any]:
            if app.openapi_schema is None:
                app.openapi_schema = create_app(settings, app.state.runtime, documented=True).openapi()
            return app.openapi_schema

        app.openapi = openapi  # type: ignore[method-assign]
    return app
