"""Every per-VM log, capped: the writer appends, nestor rotates it (copytruncate), as virtlogd does.

The logs a guest can make grow (VM_LOGS, NET_LOGS): the serial console's serial.log, QEMU's own
qemu.log (its stderr: a guest can make QEMU print a line per crafted virtio-serial control
message) and each NAT's dnsmasq log (--log-dhcp: a line per DHCP packet a guest sends). The
serial log is the model below; the others are capped the same way, at the same size.

A guest controls its serial output (`yes > /dev/ttyS0`), so the log must not grow without bound.
QEMU writes serial.log itself (chardev `logfile=…,logappend=on`, which QEMU opens with O_APPEND:
every write lands at the file's current end, so truncating the file under it is safe: its next
write starts again at offset 0, with no hole). No process per VM: the home's daemon
(`nestor serve`, which runs while any VM runs) calls `enforce` for every VM every CHECK_INTERVAL
seconds, and so does every nestor command that reads a log, before it reads (a fallback while
the daemon is down). Once serial.log exceeds the cap, `enforce` copies it to serial.log.1 and
truncates it to 0, as logrotate's `copytruncate` does; output written between the copy and the
truncation (microseconds) is lost.

The bound: with the daemon running, serial.log holds at most cap + R x (CHECK_INTERVAL + the
copy's time), R being the rate at which the guest's console writes (QEMU's 16550 UART logs one
byte per write(2); measured under TCG here: tests/integration/test_files.py), and serial.log.1
the same; a file that grew past 2 x cap while no nestor watched (the daemon killed) keeps only
its newest cap bytes in serial.log.1.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

MAX_LOG = 2 << 20  # bytes per file (virtlogd's default max_size); one rotated file is kept
MAX_LOG_ENV = "NESTOR_SERIAL_LOG_MAX"  # tests only: a smaller cap, so rotation is quick to reach
MIN_LOG = 4096
CHECK_INTERVAL = 0.25  # seconds between the daemon's looks at every VM's log
FILE_MODE = 0o600
_COPY_CHUNK = 1 << 20


def rotated(log: Path) -> Path:
    return log.with_name(log.name + ".1")


def cap_from_env() -> int:
    try:
        return max(MIN_LOG, int(os.environ.get(MAX_LOG_ENV, MAX_LOG)))
    except ValueError:
        return MAX_LOG


def prepare(log: Path) -> None:
    """Before QEMU starts: serial.log exists, private (QEMU would create it 0666 & ~umask)."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def enforce(log: Path, cap: int | None = None) -> bool:
    """Rotate `log` if it exceeds `cap` (copytruncate); True if it did. Safe to call from several
    processes at once (an flock on the log: one rotates, the others skip) and while QEMU writes."""
    cap = cap_from_env() if cap is None else cap
    try:
        fd = os.open(log, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False  # no log yet, or not ours to touch
    try:
        if os.fstat(fd).st_size <= cap:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # another nestor is rotating it right now
        size = os.fstat(fd).st_size
        if size <= cap:
            return False
        start = 0 if size <= 2 * cap else size - cap  # all of it, unless it ran away while unwatched
        _copy(fd, start, size, rotated(log))
        os.ftruncate(fd, 0)
        return True
    finally:
        os.close(fd)  # also releases the flock


def _copy(fd: int, start: int, end: int, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
    try:
        os.fchmod(out, FILE_MODE)
        offset = start
        while offset < end:
            data = os.pread(fd, min(_COPY_CHUNK, end - offset), offset)
            if not data:
                break
            os.write(out, data)
            offset += len(data)
    except BaseException:
        os.close(out)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(out)
    os.replace(tmp, dest)


@contextlib.contextmanager
def reading(fd: int) -> Iterator[None]:
    """A reader's shared flock on serial.log: no rotation while it is held (enforce takes the
    lock exclusively, without waiting, so a reader delays a rotation by one look at most)."""
    fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def enforce_all(vms_dir: Path, name: str, cap: int | None = None) -> int:
    """`enforce` on file `name` of every VM directory under `vms_dir`; how many were rotated."""
    try:
        dirs = list(vms_dir.iterdir())
    except OSError:
        return 0
    return sum(enforce(d / name, cap) for d in dirs)


# Every log a guest can make grow, and who writes it (each with O_APPEND, so copytruncate is safe):
VM_LOGS = ("serial.log", "qemu.log")  # QEMU's chardev logfile; QEMU's stdout/stderr (process.spawn opens it)
NET_LOGS = "dnsmasq-*.log"  # each NAT's dnsmasq --log-facility (--log-dhcp: a line per guest DHCP packet)


def enforce_home(root: Path, cap: int | None = None) -> int:
    """`enforce` on every capped log of the home at `root`: each VM's serial.log and qemu.log,
    each NAT's dnsmasq log; how many were rotated."""
    cap = cap_from_env() if cap is None else cap
    rotated_count = sum(enforce_all(root / "vms", name, cap) for name in VM_LOGS)
    try:
        net_logs = list((root / "net").glob(NET_LOGS))
    except OSError:
        net_logs = []
    return rotated_count + sum(enforce(log, cap) for log in net_logs)


def identity(path: Path) -> tuple[int, int, int] | None:
    """What changes when `path` is replaced (rotation writes serial.log.1 anew each time)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
