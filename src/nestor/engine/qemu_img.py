"""Every qemu-img nestor runs goes through ``run``: resource limits always, and no root where it can.

qemu-img parses images a guest (or an importing user) wrote: the class of CVE-2024-4467 (a
crafted qcow2 that makes `qemu-img info` open what its header names) runs with whatever rights
qemu-img has. So every call here:

- runs under resource limits set in the child before exec (``resource.setrlimit``): address
  space (``MAX_AS``), CPU time (the call's own deadline), no core dumps, a bounded number of
  open files (``prlimit``); a runaway parse ends with an error instead of the host's memory;
- runs as the unprivileged QEMU user (``engine/runas.py``) when nestor is root and every file
  the call names is one that user may open anyway (``as_user=True`` callers: a file the caller
  made accessible to it). nestor's own VM disks are root's alone (0600 in a 0700 home), and
  qemu-img cannot be handed an open descriptor, so those calls stay root's, behind nestor's own
  header check (``images/qcow2.py``) and with explicit formats on the command line;
- never through a shell; its stderr's last line becomes the error.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

from ..errors import EngineError, NestorError
from . import runas

MAX_AS = 4 << 30  # qemu-img's own needs are tens of MiB; the L2 cache of a 16 TiB image fits well within
MAX_FILES = 1024
DEFAULT_TIMEOUT = 120.0


def limits(cpu_seconds: float) -> list[str]:
    """The ``prlimit`` prefix that sets them (util-linux; exec'd, so no Python runs between fork
    and exec in a threaded daemon, as ``preexec_fn`` would)."""
    cpu = max(1, int(cpu_seconds) + 1)
    return ["prlimit", f"--as={MAX_AS}", f"--cpu={cpu}:{cpu + 5}", "--core=0", f"--nofile={MAX_FILES}", "--"]


def unprivileged() -> runas.QemuUser | None:
    """The user qemu-img may run as (nestor is root and the QEMU user exists), or None."""
    name = runas.wanted()
    if name is None:
        return None
    try:
        return runas.lookup(name, "runas")
    except NestorError:
        return None


def run(argv: Sequence[str], what: str, *, timeout: float = DEFAULT_TIMEOUT, as_user: bool = False,
        error: type[NestorError] = EngineError, refused: type[NestorError] | None = None,
        hint: str | None = None) -> str:
    """``qemu-img ARGV`` under the limits; its stdout. ``error`` (with ``what``) if it cannot run
    or times out, ``refused`` (default: ``error``) if qemu-img exits non-zero."""
    user = unprivileged() if as_user else None
    kwargs: dict[str, object] = {}
    if user is not None:
        kwargs.update(user=user.uid, group=user.gid, extra_groups=[], umask=0o077)
    try:
        proc = subprocess.run([*limits(timeout), "qemu-img", *argv], capture_output=True, text=True, timeout=timeout,
                              check=False, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
                              **kwargs)  # type: ignore[call-overload]
    except FileNotFoundError as exc:
        raise error("prlimit or qemu-img is not installed", hint="apt-get install util-linux qemu-utils") from exc
    except subprocess.TimeoutExpired as exc:
        raise error(f"{what}: qemu-img timed out after {timeout:.0f} s") from exc
    if proc.returncode in (126, 127) and "failed to execute qemu-img" in proc.stderr:
        raise error("qemu-img is not installed", hint="apt-get install qemu-utils")
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        detail = lines[-1] if lines else (f"killed by signal {-proc.returncode} (a resource limit?)"
                                          if proc.returncode < 0 else f"exit {proc.returncode}")
        raise (refused or error)(f"{what}: {detail}", hint=hint)
    return str(proc.stdout)


def readable_by(user: runas.QemuUser, path: os.PathLike[str] | str) -> bool:
    """Whether ``user`` may read ``path`` by its mode bits (each directory of the path as given and
    as resolved searchable, the file readable); ACLs are not looked at, so a False may be wrong
    but never lets root's files out."""
    import grp
    import pwd
    import stat
    from pathlib import Path

    given = Path(os.path.abspath(path))
    target = given.resolve()
    try:
        name = pwd.getpwuid(user.uid).pw_name
    except KeyError:
        return False
    groups = {user.gid} | {g.gr_gid for g in grp.getgrall() if name in g.gr_mem}

    def allowed(st: os.stat_result, bit: int) -> bool:
        if st.st_uid == user.uid:
            return bool(st.st_mode & (bit << 6))
        if st.st_gid in groups:
            return bool(st.st_mode & (bit << 3))
        return bool(st.st_mode & bit)

    try:
        # the walk crosses the given path's directories up to a symlink, then the target's
        for parent in (*reversed(given.parents), *reversed(target.parents)):
            if not allowed(parent.stat(), 1):
                return False
        st = target.stat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and allowed(st, 4)
