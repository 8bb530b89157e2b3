"""The audit log: who changed what, when, and how it ended, recorded at the service facade.

Every state-changing use case of the facade (service/facade.py) is declared with `@audited(...)`:
its outermost call records one row (nested facade calls do not record again) with the result `ok`
or the error's kind (and the rule, for a policy refusal). Reads are not recorded.

Who acts is the `Actor` of the current context: the front end sets it where a request arrives
(api/routes.py for the HTTP API, api/server.py for an L1's channel) with `acting(...)`; without
one it is this process's own user (the CLI and `nestor ps`, in-process). The API's operations
(long work in threads, api/runtime.py) carry the context of the request that submitted them.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import functools
import inspect
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ..errors import InvalidInput, NestorError
from ..state.audit import AuditRepo, AuditRow

if TYPE_CHECKING:
    from .facade import Service

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

P = ParamSpec("P")
R = TypeVar("R")
MAX_MESSAGE = 500


@dataclass(frozen=True)
class Actor:
    """Who asks: `via` cli (this process's uid), unix (the API socket's peer, SO_PEERCRED), tcp
    (the bearer token's name), channel (the host, over an L1's virtio-serial channel), api (an
    HTTP request whose peer is unknown: an in-process test client)."""

    via: str
    uid: int | None = None
    pid: int | None = None
    token: str | None = None

    def who(self) -> str:
        return who(self.via, self.uid, self.token)


def who(via: str, uid: int | None, token: str | None) -> str:
    """The actor in words: `uid 0 (root)`, `token ci`, `host (channel)`."""
    if token is not None:
        return f"token {token}"
    if uid is not None:
        import pwd

        try:
            return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
        except KeyError:
            return f"uid {uid}"
    return {"channel": "host (channel)"}.get(via, via)


CHANNEL = Actor("channel")
_ACTOR: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("nestor_actor", default=None)


def current() -> Actor:
    return _ACTOR.get() or Actor("cli", os.getuid(), os.getpid())


def cli_request() -> bool:
    """Is the current request a CLI command's, sent to the daemon (nestor/warm_start.py)? Not
    the in-process default, which is `cli` too."""
    actor = _ACTOR.get()
    return actor is not None and actor.via == "cli"


@contextlib.contextmanager
def acting(actor: Actor) -> Iterator[None]:
    token = _ACTOR.set(actor)
    try:
        yield
    finally:
        _ACTOR.reset(token)


def record(service: Service, operation: str, target: str | None, error: BaseException | None) -> None:
    """One row; never fails the use case (a full disk or a locked database is logged instead)."""
    actor = current()
    result, rule, message = "ok", None, None
    if isinstance(error, NestorError):
        result, rule, message = error.kind, error.rule, error.message[:MAX_MESSAGE]
    elif isinstance(error, KeyboardInterrupt):
        result = "interrupted"
    elif error is not None:
        result, message = "internal", f"{type(error).__name__}: {error}"[:MAX_MESSAGE]
    try:
        AuditRepo(service.core.conn).add(AuditRow(time.time(), actor.via, actor.uid, actor.pid, actor.token,
                                                  operation, target, result, rule, message))
    except sqlite3.Error as exc:
        log.warning("audit: could not record %s %s: %s", operation, target, exc)


def audited(operation: str, target: str | Callable[[dict[str, Any]], str | None] | None = "name",
            refusals_only: bool = False) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Record each outermost call of a facade method. `target`: the argument naming what is
    changed, or a function of the bound arguments; `{arg}` in `operation` is filled from them.
    `refusals_only`: a check ahead of work (the API's pre-checks): only a refusal is recorded,
    the work itself records its result."""

    def decorate(method: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(method)

        @functools.wraps(method)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            service: Service = args[0]  # type: ignore[assignment]
            if service._auditing:
                return method(*args, **kwargs)
            service._auditing = True
            error: BaseException | None = None
            try:
                return method(*args, **kwargs)
            except BaseException as exc:
                error = exc
                raise
            finally:
                service._auditing = False
                if error is not None or not refusals_only:
                    bound = signature.bind(*args, **kwargs)
                    bound.apply_defaults()
                    values = dict(bound.arguments)
                    what = target(values) if callable(target) else (
                        None if target is None else _text(values.get(target)))
                    record(service, operation.format(**values), what, error)

        call.__audited__ = operation  # type: ignore[attr-defined]
        return call
    return decorate


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:200]


_DURATION = re.compile(r"([0-9]{1,9})([smhdw])")
_UNIX = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")
_ISO = (r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
        r"(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?)?")
# every form --since takes, as one expression (the API's document states it: api/rules.py)
SINCE_RE = re.compile(f"{_DURATION.pattern}|{_UNIX.pattern}|{_ISO}")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float) -> float:
    """`--since`: a duration back from now (30m, 2h, 7d, 1w), an ISO 8601 time (UTC unless it
    says otherwise) or a unix time (1800000000): the unix time it names."""
    m = _DURATION.fullmatch(text)
    if m:
        return now - int(m[1]) * _UNIT[m[2]]
    if _UNIX.fullmatch(text):
        return float(text)
    try:
        if not SINCE_RE.fullmatch(text):
            raise ValueError(text)
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"invalid --since {text[:40]!r}",
                           hint="a duration (30m, 2h, 7d), a time (2026-12-07T05:00:00, UTC unless it has an offset)"
                                " or a unix time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()
