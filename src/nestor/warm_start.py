"""`nestor vm start NAME` through the home's warm daemon: the same use case, without the CLI's imports.

A new CLI process spends most of its time before QEMU's exec importing the CLI and the service
(~90 modules of nestor's own). When the home's daemon already runs (it does whenever a VM of the
home ran in the last minute, service/daemon.py), it has all of that loaded: this module, which
imports nothing of click or the service, asks it to start the VM (POST /v1/vms/NAME/start, then the
operation's long poll) and prints what the CLI prints. The daemon runs the very same
Service.vm_start, which returns only once QEMU runs as its unprivileged user.

It is used only when the result cannot differ from the CLI's own: the command line is exactly
`nestor [--home HOME] vm start NAME` with a plain VM name; the daemon is this home's, serves the
default socket, has no --netns; and it runs in the same execution context as this process: the
same interpreter, the same environment variables that reach nestor or QEMU, the same user, groups,
capabilities, umask, resource limits, cgroup and namespaces (QEMU inherits them from whoever
spawns it). Anything else, or a daemon that does not accept the connection, and `run` returns None
before anything was sent: the CLI then does the start in-process, as before. The audit log records
the start as the CLI's (via cli, this process's uid and pid: the kernel's SO_PEERCRED).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from typing import Any

from .errors import EngineError, NestorError
from .escape import error_lines

VIA_HEADER = "x-nestor-via"  # "cli": the request is a CLI command's (the audit log's `via`)
NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?")  # model.NAME_RE (a test holds them equal)
CONNECT_TIMEOUT = 2.0
POLL = 30.0  # seconds one long poll of the operation waits
# What QEMU and nestor read from the environment: a daemon that has other values would start the
# VM differently (another QEMU on PATH, another QEMU user, a test's fault point).
ENV_PREFIXES = ("NESTOR_", "QEMU", "PYTHON", "LD_")
ENV_NAMES = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL")
STATUS_FIELDS = ("Uid:", "Gid:", "Groups:", "Umask:", "CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:",
                 "NoNewPrivs:", "Seccomp:")
NAMESPACES = ("mnt", "net", "pid", "user", "uts", "ipc", "cgroup")


def parse(args: list[str]) -> tuple[str | None, str] | None:
    """(the --home given or None, the VM name) for `[--home HOME] vm start NAME`; None for anything else."""
    home = None
    if args[:1] == ["--home"] and len(args) >= 2:
        home, args = args[1], args[2:]
    if len(args) == 3 and args[:2] == ["vm", "start"] and NAME.fullmatch(args[2]):
        return home, args[2]
    return None


def default_home() -> str:
    """paths.default_home (a test holds them equal)."""
    env = os.environ.get("NESTOR_HOME")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/nestor"
    return os.path.join(os.path.expanduser("~"), ".local", "share", "nestor")


def api_socket(root: str) -> str:
    """paths.Home(root).api_socket (a test holds them equal)."""
    try:  # the built-in SHA-256: hashlib's loads OpenSSL (~10 ms of a command that takes ~40)
        from _sha256 import sha256  # type: ignore[import-not-found]
    except ImportError:
        from hashlib import sha256

    run_dir = os.environ.get("NESTOR_RUN_DIR", "/run/nestor")
    real = os.path.realpath(root)
    if real == os.path.realpath(default_home()):
        return os.path.join(run_dir, "nestor.sock")
    return os.path.join(run_dir, f"nestor-{sha256(real.encode()).hexdigest()[:8]}.sock")


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _environment(raw: bytes) -> dict[str, str]:
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            env[key] = value
    return env


def _relevant(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k in ENV_NAMES or k.startswith(ENV_PREFIXES)}


def _status(raw: bytes) -> list[str]:
    return [line for line in raw.decode(errors="replace").splitlines() if line.startswith(STATUS_FIELDS)]


def daemon_pid(root: str) -> int | None:
    """This home's daemon, if it runs in the same execution context as this process (see above)."""
    pidfile = _read(os.path.join(root, "serve.pid"))
    try:
        pid = int(pidfile or b"")
    except ValueError:
        return None
    proc = f"/proc/{pid}"
    args = [part.decode(errors="replace") for part in (_read(f"{proc}/cmdline") or b"").split(b"\0") if part]
    # The daemon's own command line (service/daemon.py: the interpreter, -m nestor, --home, serve).
    if "serve" not in args or not args or args[0] != sys.executable:
        return None
    if any(option in args for option in ("--netns", "--socket", "--channel")):
        return None
    if "--home" in args[:args.index("serve")]:
        given = args[args.index("--home") + 1]
        if os.path.realpath(given) != os.path.realpath(root):
            return None
    elif os.path.realpath(default_home()) != os.path.realpath(root):
        return None
    stat = _read(f"{proc}/stat")
    if stat is None or stat.rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
        return None
    theirs, ours = _read(f"{proc}/environ"), _read("/proc/self/environ")
    if theirs is None or ours is None or _relevant(_environment(theirs)) != _relevant(dict(os.environ)):
        return None  # NESTOR_FAULT set here (a test's kill point) is never in the daemon's: local
    mine, its = _read("/proc/self/status"), _read(f"{proc}/status")
    if mine is None or its is None or _status(mine) != _status(its):
        return None
    for name in ("limits", "cgroup"):
        if _read(f"/proc/self/{name}") != _read(f"{proc}/{name}"):
            return None
    try:
        if any(os.readlink(f"/proc/self/ns/{ns}") != os.readlink(f"{proc}/ns/{ns}") for ns in NAMESPACES):
            return None
    except OSError:
        return None
    return pid


def _request(sock: socket.socket, method: str, path: str) -> tuple[int, Any]:
    """One HTTP/1.1 request on a connected unix socket (which it closes); the status and JSON body."""
    with sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: nestor\r\n{VIA_HEADER}: cli\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        raise EngineError("the home's daemon sent an answer that is not HTTP",
                          hint="see the daemon's log (HOME/serve.log)") from None
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _unchunk(body)
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        raise EngineError(f"the home's daemon answered {status} with a body that is not JSON",
                          hint="see the daemon's log (HOME/serve.log)") from None


def _unchunk(body: bytes) -> bytes:
    out = []
    while body:
        size, _, rest = body.partition(b"\r\n")
        length = int(size.split(b";")[0], 16)
        if length == 0:
            break
        out.append(rest[:length])
        body = rest[length + 2:]
    return b"".join(out)


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


def _error(status: int, body: Any) -> NestorError:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return EngineError(f"the home's daemon answered {status} without an error", hint="see HOME/serve.log")
    return NestorError.from_json(error)


def start(sock_path: str, first: socket.socket, name: str) -> dict[str, Any]:
    """The VM's info once the daemon's start has ended, or its error raised."""
    status, op = _request(first, "POST", f"/v1/vms/{name}/start")
    if status >= 400:
        raise _error(status, op)
    while True:
        if not (isinstance(op, dict) and isinstance(op.get("id"), str) and re.fullmatch(r"[A-Za-z0-9_-]+", op["id"])):
            raise EngineError("the home's daemon sent a malformed operation", hint="see HOME/serve.log")
        if op.get("status") not in ("pending", "running"):
            break
        try:
            status, op = _request(_connect(sock_path), "GET", f"/v1/operations/{op['id']}?wait={POLL}")
        except OSError as exc:
            raise EngineError(f"vm '{name}': the home's daemon stopped answering during the start: {exc}",
                              hint=f"nestor vm show {name}") from None
        if status >= 400:
            raise _error(status, op)
    if op.get("status") != "success":
        error = op.get("error")
        raise NestorError.from_json(error if isinstance(error, dict) else {"message": f"operation {op.get('status')}"})
    result = op.get("result")
    if not isinstance(result, dict):
        raise EngineError("the home's daemon sent a malformed result", hint="see HOME/serve.log")
    return result


def run(args: list[str]) -> int | None:
    """Start the VM through the warm daemon and print what `nestor vm start` prints; the exit
    code, or None when it cannot be done that way (nothing was sent: the CLI does it itself)."""
    parsed = parse(args)
    if parsed is None:
        return None
    home, name = parsed
    root = default_home() if home is None else home
    if daemon_pid(root) is None:
        return None
    sock_path = api_socket(root)
    try:
        first = _connect(sock_path)
    except OSError:
        return None
    try:
        info = start(sock_path, first, name)
    except NestorError as exc:
        for line in error_lines(exc):
            print(line, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130  # as the CLI's; the daemon finishes the start (docs/decisions.md)
    if info.get("host"):
        print(f"vm '{name}' started on host '{info['host']}'")
    else:
        print(f"vm '{name}' started (pid {info.get('pid')}, {info.get('accelerator')}, -cpu {info.get('cpu_model')})")
    return 0

