"""Other nestor daemons (their APIs) this CLI can drive: `nestor remote add/list/remove`,
`nestor --remote NAME …`. (libvirt hosts are another thing: nestor.remote, `nestor host`.)

Stored in HOME/remotes.json (mode 0600: it holds the bearer tokens) as
``{name: {"url", "token", "ca_pem"}}``; the CA certificate is copied in at `add`, so the remote keeps
working when the file it came from moves. A URL is https://HOST:PORT (a daemon started with
`nestor serve --listen`) or unix:/PATH (a local daemon's socket, no token needed).
"""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import Conflict, InvalidInput, NotFound
from .model import validate_name

if TYPE_CHECKING:
    from .client import Client

FILE = "remotes.json"


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    token: str | None = None
    ca_pem: str | None = None

    def client(self, timeout: float | None = None) -> Client:
        from .client import DEFAULT_TIMEOUT, Client

        wait = timeout or DEFAULT_TIMEOUT
        if self.url.startswith("unix:"):
            return Client(socket=self.url.removeprefix("unix:"), token=self.token, timeout=wait)
        verify: ssl.SSLContext | bool = ssl.create_default_context(cadata=self.ca_pem) if self.ca_pem else True
        return Client(self.url, token=self.token, verify=verify, timeout=wait)


def _path(home: Path) -> Path:
    return home / FILE


def _load(home: Path) -> dict[str, dict[str, Any]]:
    try:
        data: dict[str, dict[str, Any]] = json.loads(_path(home).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read {_path(home)}: {exc}", hint=f"fix or delete {_path(home)}") from exc
    return data


def _store(home: Path, data: dict[str, dict[str, Any]]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    tmp = _path(home).with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.chmod(tmp, 0o600)
    tmp.replace(_path(home))


def check_url(url: str) -> str:
    if url.startswith("unix:") and len(url) > len("unix:"):
        return url
    if url.startswith("https://") and len(url) > len("https://"):
        return url.rstrip("/")
    raise InvalidInput(f"invalid remote URL '{url}'",
                       hint="https://HOST:PORT (nestor serve --listen HOST:PORT there) or unix:/PATH/TO/SOCKET")


def add(home: Path, name: str, url: str, token: str | None, ca: Path | None) -> Remote:
    validate_name(name, "remote")
    url = check_url(url)
    ca_pem = None
    if ca is not None:
        try:
            ca_pem = ca.read_text()
            ssl.create_default_context(cadata=ca_pem)
        except (ssl.SSLError, UnicodeDecodeError) as exc:  # SSLError is an OSError: first
            raise InvalidInput(f"'{ca}' is not a PEM certificate", hint="the daemon's HOME/tls/ca.crt") from exc
        except OSError as exc:
            raise NotFound(f"CA file '{ca}' cannot be read: {exc.strerror or exc}",
                           hint="the daemon's HOME/tls/ca.crt") from exc
    if url.startswith("https://") and not token:
        raise InvalidInput("a remote over https needs --token", hint="on that host: nestor token new NAME")
    data = _load(home)
    if name in data:
        raise Conflict(f"remote '{name}' already exists", hint=f"nestor remote remove {name} first")
    data[name] = {"url": url, "token": token, "ca_pem": ca_pem}
    _store(home, data)
    return Remote(name, url, token, ca_pem)


def get(home: Path, name: str) -> Remote:
    entry = _load(home).get(name)
    if entry is None:
        raise NotFound(f"remote '{name}' not found", hint="nestor remote list shows them; nestor remote add adds one")
    return Remote(name, str(entry["url"]), entry.get("token"), entry.get("ca_pem"))


def list_(home: Path) -> list[Remote]:
    return [get(home, name) for name in sorted(_load(home))]


def remove(home: Path, name: str) -> None:
    data = _load(home)
    if name not in data:
        raise NotFound(f"remote '{name}' not found", hint="nestor remote list shows them")
    del data[name]
    _store(home, data)
