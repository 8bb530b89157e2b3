"""Bearer tokens for the API over TCP: `nestor token new/list/revoke`.

A token is 32 random bytes (urlsafe base64), shown once. Only its SHA-256 is stored, in
HOME/tokens.json (mode 0600); random tokens of that length need no slow password hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from ..errors import Conflict, NotFound
from ..model import validate_name

FILE = "tokens.json"


def _path(home: Path) -> Path:
    return home / FILE


def _load(home: Path) -> dict[str, dict[str, Any]]:
    try:
        data: dict[str, dict[str, Any]] = json.loads(_path(home).read_text())
        return data
    except (OSError, ValueError):
        return {}


def _store(home: Path, data: dict[str, dict[str, Any]]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    tmp = _path(home).with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    tmp.replace(_path(home))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new(home: Path, name: str) -> str:
    validate_name(name, "token")
    data = _load(home)
    if name in data:
        raise Conflict(f"token '{name}' already exists", hint=f"nestor token revoke {name} first, or choose another name")
    token = secrets.token_urlsafe(32)
    data[name] = {"sha256": _digest(token), "created": time.time()}
    _store(home, data)
    return token


def list_(home: Path) -> list[dict[str, Any]]:
    return [{"name": name, "created": entry.get("created")} for name, entry in sorted(_load(home).items())]


def revoke(home: Path, name: str) -> None:
    data = _load(home)
    if name not in data:
        raise NotFound(f"token '{name}' not found", hint="nestor token list shows them")
    del data[name]
    _store(home, data)


def valid(home: Path, token: str) -> bool:
    return name_of(home, token) is not None


def name_of(home: Path, token: str) -> str | None:
    """The name of a valid token (the audit log's who over TCP); None for an unknown one."""
    if not token:
        return None
    digest = _digest(token)
    found = None
    for name, entry in _load(home).items():  # every digest compared: no early exit to time
        if hmac.compare_digest(digest, str(entry.get("sha256", ""))):
            found = name
    return found
