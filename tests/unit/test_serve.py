"""`nestor serve --listen`: address parsing and binding errors, without starting a daemon."""

from __future__ import annotations

import socket

import pytest

from nestor.api.server import bind_tcp, parse_listen
from nestor.errors import HostError, InvalidInput


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8443") == ("127.0.0.1", 8443)
    assert parse_listen("[::1]:8443") == ("::1", 8443)
    assert parse_listen(":8443") == ("0.0.0.0", 8443)
    assert parse_listen("lab.example:0") == ("lab.example", 0)
    for bad in ("8443", "host:", "host:port", "host:70000", "host:-1", ""):
        with pytest.raises(InvalidInput, match="invalid --listen address"):
            parse_listen(bad)


def test_bind_tcp_refuses_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(HostError, match=f"cannot listen on 127.0.0.1:{port}"):
            bind_tcp("127.0.0.1", port)
    with pytest.raises(HostError):
        bind_tcp("no-such-host.invalid", 8443)
