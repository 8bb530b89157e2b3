"""The API's one route table, and a plain dispatcher over it (standard library only).

Every route is declared once (api/handlers.py): method, path, handler, body, query parameters.
Two servers use the same table and the same handlers:
- FastAPI (api/routes.py) makes an endpoint of each entry, with pydantic bodies made from the
  bodies declared here, for every client and for the OpenAPI document;
- `dispatch` answers a request without FastAPI, pydantic or uvicorn, for the channel of a
  nested-host guest (service/channel_guest.py): an L1's first answer must not wait for those
  imports (~60 % of the daemon's start under TCG).

A handler gets a `Ctx` (settings and runtime) and its typed arguments, and returns an `Answer`
(status, bytes, media type, headers); it raises NestorError for refusals, which both servers turn
into the one error envelope (`error_answer`). The plain dispatcher answers only what it can
answer exactly as FastAPI would: any request it does not recognise or whose input is not plainly
valid (a missing field, a wrong type, a constraint broken, an unusual content type) it leaves to
FastAPI (`dispatch` returns None), so every error message about invalid input comes from one place.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import logging
import re
import types
import typing
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NestorError

if TYPE_CHECKING:
    from ..service import Service
    from .runtime import Runtime

log = logging.getLogger("nestor.api")
log.addHandler(logging.NullHandler())

API_PREFIX = "/v1"
RUNTIME = "(runtime)"  # a route's `does` when it is the daemon's, not a level's action (operations)
UPLOADS = "uploads"  # HOME/uploads: the files an API caller may name (nestor serve --files DIR: another)
STATUS = {
    "invalid_input": 400, "not_found": 404, "conflict": 409, "wrong_state": 409, "policy": 422,
    "cancelled": 409, "host": 503, "image": 500, "engine": 502, "guest": 502, "unauthorized": 401,
    "forbidden": 403,
}


@dataclass
class Settings:
    """What one app instance serves: a home (and its namespace), and whether it needs a token."""

    home: Path
    netns: str | None = None
    require_token: bool = False
    files: Path | None = None  # the one directory an API caller may name files in (None: HOME/uploads)
    hosts: tuple[str, ...] = ()  # Host names it answers for besides the loopback ones (api/guard.py)
    any_address: bool = False  # a Host that is any IP address too (over TCP: addresses are not rebound)

    @property
    def files_dir(self) -> Path:
        return self.files if self.files is not None else self.home / UPLOADS

    @contextmanager
    def service(self) -> Iterator[Service]:
        """A Service per request: sqlite connections stay in the thread that made them."""
        from ..service import Service

        service = Service(self.home, self.netns)
        try:
            yield service
        finally:
            service.core.conn.close()


@dataclass(frozen=True)
class Ctx:
    """What a handler is given besides its arguments."""

    settings: Settings
    runtime: Runtime


# -- answers -------------------------------------------------------------------------------------
@dataclass
class Answer:
    status: int
    body: bytes = b""
    media_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def render_json(content: Any) -> bytes:
    """JSON exactly as Starlette's JSONResponse renders it."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode("utf-8")


def json_answer(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, render_json(content), "application/json", dict(headers or {}))


def empty(status: int = 204) -> Answer:
    return Answer(status)


def error_body(kind: str, message: str, hint: str | None) -> dict[str, Any]:
    return {"kind": kind, "message": message, "hint": hint, "rule": None, "resource": {}}


def error_answer(err: NestorError) -> Answer:
    return json_answer({"error": err.to_json()}, STATUS.get(err.kind, 500))


def bug_answer(exc: Exception) -> Answer:
    return json_answer({"error": error_body("internal", f"internal error: {type(exc).__name__}: {exc}",
                                            "this is a bug: the daemon's log has the traceback")}, 500)


# -- declarations --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    """A query parameter's default and bounds (FastAPI's Query(...) is made from it)."""

    default: Any = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    pattern: str | None = None  # a string's rule (api/rules.py), anchored
    max_length: int | None = None


_MISSING: Any = dataclasses.MISSING


class Described:
    """A body field's default (or factory), its description and its rules for the OpenAPI document."""

    __slots__ = ("default", "description", "factory", "rules")

    def __init__(self, default: Any, description: str | None, factory: Callable[[], Any] | None,
                 rules: dict[str, Any]) -> None:
        self.default, self.description, self.factory, self.rules = default, description, factory, rules


def described(default: Any = _MISSING, description: str | None = None, factory: Callable[[], Any] | None = None,
              **rules: Any) -> Any:
    """`name: T = described(DEFAULT, "what it is", pattern=..., ge=..., le=...)` in a Body; no default:
    a required field. Rules (api/rules.py): pattern (a regular expression the whole value matches),
    ge, le, multiple_of, min_length, max_length, max_items, and items (the rules of a list's items);
    the OpenAPI document states them and both servers refuse a value that breaks one (400)."""
    return Described(default, description, factory, rules)


@dataclass(frozen=True)
class BodyField:
    name: str
    kind: Any
    default: Any = _MISSING
    factory: Callable[[], Any] | None = None
    description: str | None = None
    rules: dict[str, Any] = field(default_factory=dict)

    @property
    def required(self) -> bool:
        return self.default is _MISSING and self.factory is None

    def make_default(self) -> Any:
        return self.factory() if self.factory is not None else self.default


class Body:
    """Base of request bodies: the fields are the class's annotations, with their defaults
    (a value, or described(...)); FastAPI gets a pydantic model of each (extra fields
    forbidden, api/routes.py). Not dataclasses: an L1's daemon imports these on its way to its
    first answer, and each dataclass costs an exec of generated code (~30 ms under TCG).

    `combined`: the rules that tie fields together (api/rules.py: one of, at least one, this only
    with that), as JSON Schema; the OpenAPI document states them (allOf) and the service refuses
    what breaks one (400 naming the fields); tests/unit/test_api_contract.py holds both to them."""

    combined: tuple[dict[str, Any], ...] = ()

    def __init__(self, **values: Any) -> None:
        for f in body_fields(type(self)):
            if f.name in values:
                setattr(self, f.name, values.pop(f.name))
            elif f.required:
                raise TypeError(f"{type(self).__name__}: '{f.name}' is required")
            else:
                setattr(self, f.name, f.make_default())
        if values:
            raise TypeError(f"{type(self).__name__}: no field {', '.join(sorted(values))}")

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in body_fields(type(self))}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Body) and type(other) is type(self) and self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.as_dict().items())})"


_FIELDS: dict[type[Body], list[BodyField]] = {}


def body_fields(body: type[Body]) -> list[BodyField]:
    """A body's fields in declaration order (worked out on first use)."""
    if body not in _FIELDS:
        fields = []
        for name, kind in typing.get_type_hints(body).items():
            if name == "combined":
                continue
            value = body.__dict__.get(name, _MISSING)
            if isinstance(value, Described):
                fields.append(BodyField(name, kind, value.default, value.factory, value.description, value.rules))
            else:
                fields.append(BodyField(name, kind, value))
        _FIELDS[body] = fields
    return _FIELDS[body]


@dataclass(frozen=True)
class Route:
    method: str  # get, post, put, patch, delete
    path: str  # under API_PREFIX, with {name} or {name:path} parameters
    handler: Callable[..., Answer]
    status_code: int = 200
    responses: dict[int | str, dict[str, Any]] = field(default_factory=dict)
    query: dict[str, tuple[Any, Query]] = field(default_factory=dict)  # name -> (type, Query)
    does: str = ""  # the nestor.hypervisor.Hypervisor method it answers, or RUNTIME
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)  # path parameter -> its rules (else rules.PATH's)

    def param_rules(self, name: str) -> dict[str, Any]:
        from .rules import PATH

        return self.rules.get(name, PATH.get(name, {}))

    # Worked out on first use, not at import: an L1's daemon imports this table on its way to
    # its first answer, where each annotation evaluated and each pattern compiled costs (TCG).
    @functools.cached_property
    def pattern(self) -> re.Pattern[str]:
        return _compile(API_PREFIX + self.path)

    @functools.cached_property
    def _body(self) -> tuple[type[Body] | None, bool]:
        hint = typing.get_type_hints(self.handler).get("body")
        if hint is None:
            return None, True
        args = typing.get_args(hint)
        if args and type(None) in args:
            (inner,) = [a for a in args if a is not type(None)]
            return inner, False
        return hint, True

    @property
    def body(self) -> type[Body] | None:
        return self._body[0]

    @property
    def body_required(self) -> bool:
        return self._body[1]

    @property
    def params(self) -> list[str]:
        return re.findall(r"{(\w+)(?::path)?}", self.path)


def _compile(path: str) -> re.Pattern[str]:
    """Starlette's matching: {name} is one segment ([^/]+), {name:path} anything (.*)."""
    out, pos = "^", 0
    for m in re.finditer(r"{(\w+)(:path)?}", path):
        out += re.escape(path[pos:m.start()]) + (f"(?P<{m[1]}>.*)" if m[2] else f"(?P<{m[1]}>[^/]+)")
        pos = m.end()
    return re.compile(out + re.escape(path[pos:]) + "$")


class Table:
    """The routes in declaration order (the order matching tries them, as Starlette does)."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(self, method: str, path: str, status_code: int = 200,
              responses: dict[int | str, dict[str, Any]] | None = None,
              query: dict[str, tuple[Any, Query]] | None = None,
              does: str = "", params: dict[str, dict[str, Any]] | None = None,
              ) -> Callable[[Callable[..., Answer]], Callable[..., Answer]]:
        """`does`: the Hypervisor method this route answers (tests/unit/test_hypervisor_parity.py);
        `params`: a path parameter's rules where they are not rules.PATH's for its name."""
        def decorate(handler: Callable[..., Answer]) -> Callable[..., Answer]:
            self.routes.append(Route(method, path, handler, status_code, responses or {}, dict(query or {}), does,
                                     dict(params or {})))
            return handler
        return decorate

    def get(self, path: str, **kwargs: Any) -> Callable[[Callable[..., Answer]], Callable[..., Answer]]:
        return self.route("get", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Callable[[Callable[..., Answer]], Callable[..., Answer]]:
        return self.route("post", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Callable[[Callable[..., Answer]], Callable[..., Answer]]:
        return self.route("put", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Callable[[Callable[..., Answer]], Callable[..., Answer]]:
        return self.route("patch", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Callable[[Callable[..., Answer]], Callable[..., Answer]]:
        return self.route("delete", path, **kwargs)


# -- the plain dispatcher -------------------------------------------------------------------------
class _Unsure(Exception):
    """This request is FastAPI's to answer (its validation message, its 404 or 405)."""


_INT = re.compile(r"-?[0-9]{1,18}")
_FLOAT = re.compile(r"-?[0-9]{1,15}(\.[0-9]{1,15})?")
_BOOLS = {"true": True, "false": False, "1": True, "0": False}


def _plain(kind: Any, value: Any) -> Any:
    """`value` (decoded JSON) as `kind` where pydantic would take it unchanged; else _Unsure."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _plain(inner, value)
    if origin is list:
        if type(value) is not list:
            raise _Unsure
        return [_plain(args[0], v) for v in value]
    if kind is str and type(value) is str:
        return value
    if kind is bool and type(value) is bool:
        return value
    if kind is int and type(value) is int:
        return value
    if kind is int and type(value) is float and value.is_integer():  # JSON Schema: 1.0 is an integer
        return int(value)
    if kind is float and type(value) in (int, float):
        return float(value)
    if isinstance(kind, type) and issubclass(kind, enum.Enum) and type(value) is str:
        try:
            return kind(value)
        except ValueError:
            raise _Unsure from None
    raise _Unsure


def obeys(value: Any, rules: dict[str, Any]) -> bool:
    """Does a (typed) body value keep a field's rules? None always does (a nullable field's null)."""
    if value is None or not rules:
        return True
    if "enum" in rules:
        return (value.value if isinstance(value, enum.Enum) else value) in rules["enum"]
    if isinstance(value, list):
        return (rules.get("min_items", 0) <= len(value) <= rules.get("max_items", len(value))
                and all(obeys(v, rules.get("items", {})) for v in value))
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, str):
        pattern = rules.get("pattern")
        found = None if pattern is None else re.search(pattern, value)
        return (rules.get("min_length", 0) <= len(value) <= rules.get("max_length", len(value))
                and (pattern is None or (found is not None and (not pattern.endswith("$") or found.end() == len(value)))))
    if isinstance(value, bool):
        return True
    if isinstance(value, (int, float)):
        step = rules.get("multiple_of")
        return (rules.get("ge", value) <= value <= rules.get("le", value)
                and (step is None or value % step == 0))
    return True


def _query_value(kind: Any, text: str) -> Any:
    args = typing.get_args(kind)
    if args:
        (kind,) = [a for a in args if a is not type(None)]
    if kind is str:
        return text
    if kind is bool and text in _BOOLS:
        return _BOOLS[text]
    if kind is int and _INT.fullmatch(text):
        return int(text)
    if kind is float and _FLOAT.fullmatch(text):
        return float(text)
    raise _Unsure


def _bounded(value: Any, q: Query) -> Any:
    if value is None:
        return value
    if isinstance(value, str) and not obeys(value, {k: v for k, v in (("pattern", q.pattern), ("max_length", q.max_length))
                                                    if v is not None}):
        raise _Unsure
    if isinstance(value, str):
        return value
    if (q.ge is not None and not value >= q.ge) or (q.gt is not None and not value > q.gt) \
            or (q.le is not None and not value <= q.le):
        raise _Unsure
    return value


def _parse_body(route: Route, headers: dict[str, str], body: bytes) -> Any:
    assert route.body is not None
    if not body:
        if route.body_required:
            raise _Unsure
        return None
    ctype = headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise _Unsure
    try:
        data = json.loads(body)
    except ValueError:
        raise _Unsure from None
    if type(data) is not dict:
        raise _Unsure
    fields = body_fields(route.body)
    if not set(data) <= {f.name for f in fields}:
        raise _Unsure  # extra fields are refused, in FastAPI's words
    values = {}
    for f in fields:
        if f.name in data:
            values[f.name] = _plain(f.kind, data[f.name])
            if not obeys(values[f.name], f.rules):
                raise _Unsure  # FastAPI words the broken rule
        elif f.required:
            raise _Unsure
    return route.body(**values)


def _match(table: Table, method: str, path: str) -> tuple[Route, dict[str, str]]:
    for route in table.routes:
        m = route.pattern.match(path)
        if m and route.method == method:  # Starlette too takes the first route matching path and method
            return route, m.groupdict()
    raise _Unsure  # FastAPI's 404 or 405


def dispatch(table: Table, ctx: Ctx, method: str, target: str, headers: dict[str, str], body: bytes) -> Answer | None:
    """The answer to one request, or None when FastAPI must answer it (see the module's doc)."""
    raw_path, _, raw_query = target.partition("?")
    from . import forward

    if forward.wanted(urllib.parse.unquote(raw_path), raw_query):  # a level below answers (api/forward.py)
        return forward.forward(ctx.settings, method, urllib.parse.unquote(raw_path), raw_query, headers, body)
    try:
        route, params = _match(table, method.lower(), urllib.parse.unquote(raw_path))
        lowered = {k.lower(): v for k, v in headers.items()}
        query = urllib.parse.parse_qs(raw_query, keep_blank_values=True)
        kwargs: dict[str, Any] = dict(params)
        if not all(obeys(value, route.param_rules(name)) for name, value in params.items()):
            raise _Unsure
        for name, (kind, q) in route.query.items():
            given = query.get(name)
            if given is None:
                kwargs[name] = q.default
            elif len(given) != 1:
                raise _Unsure
            else:
                kwargs[name] = _bounded(_query_value(kind, given[0]), q)
        if route.body is not None:
            kwargs["body"] = _parse_body(route, lowered, body)
        elif body:
            raise _Unsure
    except _Unsure:
        return None
    try:
        return route.handler(ctx, **kwargs)
    except NestorError as err:
        return error_answer(err)
    except Exception as exc:
        log.exception("internal error on %s %s", method, raw_path)
        return bug_answer(exc)
