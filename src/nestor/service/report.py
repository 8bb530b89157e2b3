"""Reports across levels: `nestor host check --tree` and `nestor bugreport`.

Each level answers for itself (its own host facts, its own VMs) and asks the nestor inside each
of its running nested-host VMs for the same report through that VM's API channel, so a report
of the tree is the same call at every level. What comes up from below is untrusted: it is
checked, cut to size and its text cleaned before it is shown or written (docs/security.md).

A bug report holds, per level: versions (nestor, QEMU, kernel), `host check`, the CPU flags, the
`kvm*` module parameters, the tail of the kernel log, and per VM its QEMU argv and the tails of
its logs. It never holds tokens, keys or cloud-init user data: nothing is read from the token
store, the image store or a VM's seed, and what is read (logs, argv) passes through `redact`.
"""

from __future__ import annotations

import functools
import platform
import re
import socket
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .. import __version__, paths
from ..engine import process
from ..errors import GuestError, NestorError
from ..model import validate_name
from .core import Core
from .guests import _clean

if TYPE_CHECKING:
    from ..client import Client

TAIL = 64 << 10  # bytes of each log and of the kernel log kept per level
MAX_VMS = 64  # VMs a level's report may list (a guest's answer is not trusted)
MAX_DEPTH = 8
FILE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

T = TypeVar("T", list[Any], dict[str, Any])
Connect = Callable[[str], AbstractContextManager["Client"]]

# What a report must never carry, whatever a guest printed: private keys, SSH public keys (they
# name users), and the values of anything that looks like a secret (token=…, password: …).
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S)
_SSH_KEY = re.compile(r"\b(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp\d+|sk-ssh-ed25519@openssh\.com)\s+[A-Za-z0-9+/=]{16,}")
_SECRET = re.compile(r"(?i)\b(token|password|passwd|secret|authorization)(\s*[=:]\s*(?:bearer\s+)?|\s+bearer\s+)\S+")


def redact(text: str) -> str:
    text = _PRIVATE_KEY.sub("[private key removed]", text)
    text = _SSH_KEY.sub(r"\1 [key removed]", text)
    return _SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}[removed]", text)


def _tail(path: Path, limit: int = TAIL) -> str:
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - limit))
            return redact(f.read(limit).decode(errors="replace"))
    except OSError as exc:
        return f"(not readable: {exc.strerror})"


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({argv[0]}: {exc})"
    return done.stdout if done.returncode == 0 else f"({argv[0]} exited {done.returncode}: {done.stderr.strip()})"


def _kvm_parameters() -> str:
    lines = []
    for module in sorted(Path("/sys/module").glob("kvm*")):
        for param in sorted((module / "parameters").glob("*")):
            try:
                lines.append(f"{module.name}.{param.name}={param.read_text().strip()}")
            except OSError:
                continue
    return "\n".join(lines) + "\n" if lines else "(no kvm module loaded)\n"


def _cpu_flags() -> str:
    for line in _tail(Path("/proc/cpuinfo"), 1 << 20).splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return value.strip() + "\n"
    return "(no flags in /proc/cpuinfo)\n"


def _argv(vm_dir: Path) -> str:
    pid = process.live_pid(vm_dir)
    if pid is None:
        return "(not running)\n"
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError as exc:
        return f"(not readable: {exc.strerror})\n"
    return redact("\n".join(arg.decode(errors="replace") for arg in raw.split(b"\0") if arg)) + "\n"


def _nested_running(core: Core) -> list[str]:
    """The VMs of this level that run a nestor of their own (running, nesting on)."""
    from .vms import VMs

    vms = VMs(core)
    return [c.name for c in core.vms.all() if c.nested and vms.info(c).state == "running"]


def _below(core: Core, timeout: float, ask: Callable[[Client], dict[str, Any]],
           connect: Connect | None = None) -> dict[str, Any]:
    """The same report from the nestor inside each running nested-host VM; a level that does not
    answer is reported with why, and the others still are."""
    from . import channel

    connect = connect or functools.partial(channel.client, core, timeout=timeout)
    out: dict[str, Any] = {}
    for name in _nested_running(core)[:MAX_VMS]:
        try:
            with connect(name) as inner:
                out[name] = ask(inner)
        except NestorError as exc:
            out[name] = {"error": exc.message}
    return out


# -- host check --tree ----------------------------------------------------------------------------
def check_tree(core: Core, timeout: float, host_check: Callable[[], Any]) -> dict[str, Any]:
    inner = max(timeout - 5, 2)
    return level_check(host_check(), _below(core, timeout, lambda c: c.host_check_tree(timeout=inner)))


def level_check(report: Any, below: dict[str, Any]) -> dict[str, Any]:
    """One level of a check tree: its host check and the levels inside its VMs."""
    from .types import to_json

    return {"host": socket.gethostname(), "ok": report.ok, "facts": report.facts, "checks": to_json(report.checks),
            "below": below}


def check_tree_from_json(data: Any, depth: int = 0) -> dict[str, Any]:
    """A level's check tree as received (untrusted): shape, sizes and text checked."""
    if depth > MAX_DEPTH:
        raise GuestError(f"the check tree below is deeper than {MAX_DEPTH} levels")
    if not isinstance(data, dict):
        raise GuestError("a level's check tree is malformed")
    if "error" in data:
        return {"error": _clean(data["error"], "unreachable", 500)}
    checks = []
    for c in _field(data, "checks", list):
        if isinstance(c, dict):
            checks.append({"name": _clean(c.get("name"), "?"), "ok": c.get("ok") is True,
                           "detail": _clean(c.get("detail"), "", 500),
                           "fix": _clean(c.get("fix"), "", 500) if c.get("fix") else None})
    facts, below = _field(data, "facts", dict), _field(data, "below", dict)
    return {"host": _clean(data.get("host"), "?"), "ok": data.get("ok") is True,
            "facts": {_clean(k, "?", 64): v if isinstance(v, bool | int | float) else _clean(v, "", 200)
                      for k, v in list(facts.items())[:64]},
            "checks": checks[:64],
            "below": {name: check_tree_from_json(sub, depth + 1) for name, sub in list(below.items())[:MAX_VMS]
                      if _valid_name(name)}}


def _field(data: dict[str, Any], key: str, kind: type[T]) -> T:
    """data[key] if it is a KIND, else an empty KIND (a guest's answer is not trusted)."""
    value = data.get(key)
    return value if isinstance(value, kind) else kind()


def _valid_name(name: Any) -> bool:
    try:
        validate_name(name)
    except NestorError:
        return False
    return True


# -- bugreport ------------------------------------------------------------------------------------
def bugreport(core: Core, timeout: float, host_check: Callable[[], Any]) -> dict[str, Any]:
    """This level's report (file name → text) and the reports of the levels below."""
    import json

    from .types import to_json

    report = host_check()
    qemu = report.facts.get("qemu_path") or "qemu-system-x86_64"
    files = {
        "versions.txt": f"nestor {__version__}\nkernel {platform.release()}\n{_run([qemu, '--version']).strip()}\n",
        "host-check.json": json.dumps({"facts": report.facts, "checks": to_json(report.checks)}, indent=2) + "\n",
        "cpu-flags.txt": _cpu_flags(),
        "kvm-parameters.txt": _kvm_parameters(),
        "dmesg.txt": redact(_run(["dmesg"])[-TAIL:]),
    }
    vms: dict[str, dict[str, str]] = {}
    for config in list(core.vms.all())[:MAX_VMS]:
        vm_dir = core.vm_dir(config)
        vms[config.name] = {"argv.txt": _argv(vm_dir),
                            "serial.log": _tail(vm_dir / paths.SERIAL_LOG),
                            "qemu.log": _tail(vm_dir / paths.QEMU_LOG)}
    inner = max(timeout - 5, 2)
    return {"host": socket.gethostname(), "files": files, "vms": vms,
            "below": _below(core, timeout, lambda c: c.bugreport(timeout=inner))}


def bugreport_from_json(data: Any, depth: int = 0) -> dict[str, Any]:
    """A level's bug report as received (untrusted): known shape, safe file names, text bounded and redacted."""
    if depth > MAX_DEPTH:
        raise GuestError(f"the bug report below is deeper than {MAX_DEPTH} levels")
    if not isinstance(data, dict):
        raise GuestError("a level's bug report is malformed")
    if "error" in data:
        return {"error": _clean(data["error"], "unreachable", 500)}

    def texts(value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            return {}
        return {k: redact(v[-TAIL:]) for k, v in list(value.items())[:32]
                if isinstance(k, str) and FILE_NAME.fullmatch(k) and isinstance(v, str)}

    vms, below = _field(data, "vms", dict), _field(data, "below", dict)
    return {"host": _clean(data.get("host"), "?"), "files": texts(data.get("files")),
            "vms": {name: texts(v) for name, v in list(vms.items())[:MAX_VMS] if _valid_name(name)},
            "below": {name: bugreport_from_json(sub, depth + 1) for name, sub in list(below.items())[:MAX_VMS]
                      if _valid_name(name)}}


def archive_members(data: dict[str, Any], prefix: str) -> list[tuple[str, str]]:
    """(path in the archive, text) for a report and every level below: PREFIX/FILE for the
    level, PREFIX/vms/NAME/FILE for its VM NAME, PREFIX/vms/NAME/inside/… for the level inside it."""
    if "error" in data:
        return [(f"{prefix}/unreachable.txt", data["error"] + "\n")]
    members = [(f"{prefix}/host.txt", data["host"] + "\n")]
    members += [(f"{prefix}/{name}", text) for name, text in data["files"].items()]
    for vm, files in data["vms"].items():
        members += [(f"{prefix}/vms/{vm}/{name}", text) for name, text in files.items()]
    for vm, sub in data["below"].items():
        members += archive_members(sub, f"{prefix}/vms/{vm}/inside")
    return members


def level_paths(data: dict[str, Any], path: str) -> list[str]:
    """The path of this level and of every level below it that answered or was asked."""
    below = data.get("below", {}) if "error" not in data else {}
    return [path, *(p for vm, sub in below.items() for p in level_paths(sub, f"{path}/{vm}"))]
