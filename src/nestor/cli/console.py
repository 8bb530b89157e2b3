"""Attach a terminal (or a pipe) to a VM's serial socket."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import termios
import tty
from collections.abc import Iterator
from pathlib import Path

from ..errors import StateError

DETACH = b"\x1d"  # Ctrl-]
QUIET_AFTER_EOF = 1.0  # piped input: after stdin ends, leave once the guest is quiet this long


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def attach(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as exc:
        raise StateError(f"cannot attach to {path}: {exc}") from exc
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    if os.isatty(stdin):
        sys.stderr.write("attached; Ctrl-] detaches\r\n")
    stdin_open = True
    with _raw(stdin), sock:
        while True:
            readers = [sock] + ([stdin] if stdin_open else [])
            ready, _, _ = select.select(readers, [], [], None if stdin_open else QUIET_AFTER_EOF)
            if not ready:
                return
            if sock in ready:
                data = sock.recv(65536)
                if not data:
                    return
                os.write(stdout, data)
            if stdin in ready:
                data = os.read(stdin, 4096)
                if not data:
                    stdin_open = False
                    continue
                if DETACH in data:
                    return
                sock.sendall(data)
