"""nestor's one error vocabulary.

Every error a front end shows derives from :class:`NestorError`; each carries a one-line
``message``, an optional ``hint`` and the process ``exit_code`` the CLI returns::

    NestorError
     ├── InvalidInput        bad user input (name, size, CIDR, ...); nothing changed   exit 2
     ├── NotFound            unknown VM, image, switch, ...                            exit 3
     ├── Conflict            the object exists, or is busy (locked by another command)  exit 4
     ├── StateError          the operation is not allowed in the VM's current state     exit 5
     │    └── PolicyError    refused by one of the seed's rules (R2, R7, R12-R14)
     ├── HostError           the host lacks something (a binary, a capability)         exit 6
     ├── ImageError          an image could not be built (download, tooling)           exit 7
     ├── EngineError         QEMU failed to start or QMP failed                         exit 8
     └── GuestError          the guest agent failed or timed out                       exit 9

Usage::

    with error_context(vm="l1"):
        raise StateError("vm is running", hint="stop it first")
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class NestorError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.context: dict[str, str] = {}

    def __str__(self) -> str:
        return self.message


class InvalidInput(NestorError):
    exit_code = 2


class NotFound(NestorError):
    exit_code = 3


class Conflict(NestorError):
    exit_code = 4


class StateError(NestorError):
    exit_code = 5


class PolicyError(StateError):
    """Refused by one of the seed's rules; the message names the rule."""


class HostError(NestorError):
    exit_code = 6


class ImageError(NestorError):
    exit_code = 7


class EngineError(NestorError):
    exit_code = 8


class GuestError(NestorError):
    exit_code = 9


@contextlib.contextmanager
def error_context(**context: str) -> Iterator[None]:
    """Attach context (``vm=``, ``switch=``) to any NestorError raised inside."""
    try:
        yield
    except NestorError as exc:
        for key, value in context.items():
            exc.context.setdefault(key, value)
        raise
