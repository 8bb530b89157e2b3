"""QEMU runs as an unprivileged system user, as libvirt's QEMU runs as `libvirt-qemu`.

As root, nestor starts every QEMU with `-run-with user=NAME` (QEMU >= 9.1) or `-runas NAME`
(older QEMUs): QEMU opens everything on its command line as root (disks and the image cache
behind them, taps, NVRAM, the cloud-init seed, sockets, the console FIFO, /dev/kvm), then calls
setgid/initgroups/setuid before the guest's first instruction. From then on it has no
capabilities, is not dumpable, and cannot enter nestor's home (0700, root's): whatever it needs
later is handed to it as a file descriptor over QMP (`getfd`/`add-fd`), as libvirt does (today:
the migration stream of `vm save` and restore).

Not as root (a developer's own home), QEMU simply runs as the invoking user and nothing is
switched, as under libvirt's qemu:///session. `NESTOR_QEMU_USER` names another user, as
libvirt's qemu.conf `user =` does; `root` there turns the switch off (documented, not default).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..host import facts

USER = "nestor-qemu"
USER_ENV = "NESTOR_QEMU_USER"
SETUP_HINT = ("run scripts/setup as root (it creates the system user), or: useradd --system --no-create-home "
              f"--home-dir /nonexistent --shell /usr/sbin/nologin --user-group --groups kvm {USER}")


@dataclass(frozen=True)
class QemuUser:
    """Who QEMU becomes once it has opened its files, and how this QEMU is asked to."""

    name: str
    uid: int
    gid: int
    option: str = "runas"  # "run-with": -run-with user=NAME (QEMU >= 9.1); "runas": -runas NAME

    def argv(self) -> list[str]:
        if self.option == "run-with":
            return ["-run-with", f"user={self.name}"]
        return ["-runas", self.name]


def wanted() -> str | None:
    """The user QEMU should run as, or None: not root (nothing to drop) or NESTOR_QEMU_USER=root."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get(USER_ENV) or USER
    return None if name == "root" else name


def lookup(name: str, option: str | None) -> QemuUser:
    """The user's ids, or a HostError with the fix. `option` is the QEMU's way to switch
    (`host.facts.qemu_user_option`); None means this QEMU has neither."""
    from ..errors import HostError

    if not name or not name.isprintable() or "," in name or ":" in name:
        raise HostError(f"{USER_ENV} {name!r} is not a user name", hint=f"unset it (default {USER})")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        hint = SETUP_HINT if name == USER else f"create the user {name}, or unset {USER_ENV} (default {USER})"
        raise HostError(f"the user QEMU runs as, '{name}', does not exist", hint=hint) from None
    if entry.pw_uid == 0:
        raise HostError(f"the user QEMU runs as, '{name}', has uid 0", hint=f"give {name} its own uid, or use {USER}")
    if option is None:
        raise HostError("this QEMU has neither -run-with user= nor -runas: it cannot drop root",
                        hint="install Debian's qemu-system-x86 (scripts/setup)")
    return QemuUser(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, option=option)


def groups_of(name: str) -> list[str]:
    """The supplementary groups QEMU gets (initgroups): for checks and tests."""
    entry = pwd.getpwnam(name)
    return [g.gr_name for g in grp.getgrall() if name in g.gr_mem or g.gr_gid == entry.pw_gid]


def user_option(binary: str, cache: Path | None = None) -> str | None:
    """How `binary` drops root (host.facts.qemu_user_option), cached in `cache` keyed by the
    binary's path, size and mtime: probing runs QEMU (~40 ms), and `vm start` is a hot path."""
    path = shutil.which(binary) or binary
    try:
        st = os.stat(path)
    except OSError:
        return None
    identity = f"{path} {st.st_size} {st.st_mtime_ns}"
    if cache is not None:
        try:
            data = json.loads(cache.read_text())
            if data.get("binary") == identity:
                return data.get("user_option") if data.get("user_option") in ("run-with", "runas") else None
        except (OSError, ValueError, AttributeError):
            pass
    level = facts.parse_level(facts._read("/proc/cmdline"))
    option = facts.qemu_user_option(path, facts.probe_timeout(level))  # emulated QEMU starts are slow in guests
    if cache is not None and option is not None:
        from ..files import private_dir, write_private

        try:
            private_dir(cache.parent)
            write_private(cache, json.dumps({"binary": identity, "user_option": option}))
        except OSError:
            pass  # a cache only
    return option


def resolve(binary: str = facts.QEMU_BINARY, cache: Path | None = None) -> QemuUser | None:
    """The user QEMU must run as (None: nestor is not root, or NESTOR_QEMU_USER=root); a
    HostError if that user is missing or this QEMU cannot switch."""
    name = wanted()
    if name is None:
        return None
    return lookup(name, user_option(binary, cache))
