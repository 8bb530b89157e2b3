"""nestor's one error vocabulary.

Every error a front end shows derives from :class:`NestorError`; each carries a one-line
``message``, an optional ``hint``, a ``kind`` (the API's error code), the ``rule`` of the seed
that refused (PolicyError only, e.g. "R7"), the ``context`` (resources: ``vm=``, ``switch=``) and
the process ``exit_code`` the CLI returns. The API maps ``kind`` to an HTTP status::

    NestorError
     kind             class                                                          exit  HTTP
     ├── invalid_input   InvalidInput   bad user input (name, size, CIDR, ...)       2    400
     ├── not_found       NotFound       unknown VM, image, switch, ...               3    404
     ├── conflict        Conflict       exists already, or busy (locked)             4    409
     ├── wrong_state     StateError     not allowed in the VM's current state        5    409
     │    └── policy     PolicyError    refused by a seed rule (R2, R7, R12-R14)     5    422
     ├── host            HostError      the host lacks something                     6    503
     ├── image           ImageError     an image could not be built                  7    500
     ├── engine          EngineError    QEMU failed to start, or QMP failed          8    502
     ├── guest           GuestError     the guest agent failed or timed out          9    502
     ├── cancelled       Cancelled      an operation was cancelled                   10   409
     ├── unauthorized    Unauthorized   no valid bearer token (API over TCP)         11   401
     └── forbidden       Forbidden      a foreign Host or Origin (api/guard.py)      12   403

Usage::

    with error_context(vm="l1"):
        raise StateError("vm is running", hint="stop it first")
"""

from __future__ import annotations

import contextlib

TYPE_CHECKING = False  # typing's own costs an import on every command (nestor/warm_start.py imports this)
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

MAX_TEXT = 1000  # characters of a message, hint or resource received from another nestor


class NestorError(Exception):
    exit_code = 1
    kind = "error"

    def __init__(self, message: str, hint: str | None = None, rule: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.rule = rule
        self.context: dict[str, str] = {}

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, Any]:
        """The API's error envelope body."""
        return {"kind": self.kind, "message": self.message, "hint": self.hint, "rule": self.rule,
                "resource": dict(self.context)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NestorError:
        """Rebuild an error received from the API (client side): same class, same fields."""
        def text(value: Any) -> str | None:  # the other end may be an untrusted guest: bounded strings
            return None if value is None else str(value)[:MAX_TEXT] if isinstance(value, str | int | float) else "?"

        kind = str(data.get("kind", "error"))
        err_cls = next((c for c in _all_errors() if c.kind == kind), NestorError)
        err = err_cls(text(data.get("message")) or "", text(data.get("hint")), text(data.get("rule")))
        resource = data.get("resource")
        if isinstance(resource, dict):
            err.context.update({str(k)[:MAX_TEXT]: text(v) or "" for k, v in list(resource.items())[:8]})
        return err


def _all_errors() -> list[type[NestorError]]:
    found: list[type[NestorError]] = []
    todo: list[type[NestorError]] = [NestorError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


class InvalidInput(NestorError):
    exit_code = 2
    kind = "invalid_input"


class NotFound(NestorError):
    exit_code = 3
    kind = "not_found"


class Conflict(NestorError):
    exit_code = 4
    kind = "conflict"


class StateError(NestorError):
    exit_code = 5
    kind = "wrong_state"


class PolicyError(StateError):
    """Refused by one of the seed's rules; the message names the rule and ``rule`` holds its id."""

    kind = "policy"


class Cancelled(NestorError):
    """A long operation was cancelled (API: DELETE on the operation)."""

    exit_code = 10
    kind = "cancelled"


class Unauthorized(NestorError):
    """The API over TCP refused a request without a valid bearer token."""

    exit_code = 11
    kind = "unauthorized"


class Forbidden(NestorError):
    """The API refused a request from a foreign web page (its Host or Origin is not nestor's, api/guard.py),
    or one that names a file outside the server's files directory (api/handlers.api_file)."""

    exit_code = 12
    kind = "forbidden"


class HostError(NestorError):
    exit_code = 6
    kind = "host"


class ImageError(NestorError):
    exit_code = 7
    kind = "image"


class EngineError(NestorError):
    exit_code = 8
    kind = "engine"


class GuestError(NestorError):
    exit_code = 9
    kind = "guest"


@contextlib.contextmanager
def error_context(**context: str) -> Iterator[None]:
    """Attach context (``vm=``, ``switch=``) to any NestorError raised inside."""
    try:
        yield
    except NestorError as exc:
        for key, value in context.items():
            exc.context.setdefault(key, value)
        raise
