"""The serial console's log, capped: QEMU writes into a FIFO, this pump writes the disk file.

A guest controls its serial output (`yes > /dev/ttyS0`), so QEMU never writes serial.log itself
(its chardev `logfile=` has no size limit). As libvirt does with virtlogd, QEMU's log output goes
to a pipe (here the FIFO serial.pipe) and a separate process writes it to serial.log, rotating to
serial.log.1 once it reaches MAX_LOG: the disk never holds more than 2 x MAX_LOG per VM. If the
pump cannot keep up QEMU's writes block (the guest's console slows down); if the pump is gone
QEMU's writes fail with EPIPE and the output is dropped; neither can fill the host's disk.

Lifetime: `start()` makes the FIFO and holds a write end open while QEMU starts (so neither side
blocks in open()), then `started()` closes it. The pump exits at end of file once the VM's QEMU
is gone (an end of file while QEMU lives means it has not opened the FIFO yet: it waits).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

MAX_LOG = 2 << 20  # bytes per file (virtlogd's default max_size); one rotated file is kept
MAX_LOG_ENV = "NESTOR_SERIAL_LOG_MAX"  # tests only: a smaller cap, so rotation is quick to reach
MIN_LOG = 4096
CHUNK = 65536
FILE_MODE = 0o600


def rotated(log: Path) -> Path:
    return log.with_name(log.name + ".1")


def cap_from_env() -> int:
    try:
        return max(MIN_LOG, int(os.environ.get(MAX_LOG_ENV, MAX_LOG)))
    except ValueError:
        return MAX_LOG


def start(vm_dir: Path, fifo: Path, cap: int | None = None) -> int:
    """Make the FIFO and start the pump reading it; return the write end to close once QEMU runs."""
    cap = cap_from_env() if cap is None else cap
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo, FILE_MODE)
    os.chmod(fifo, FILE_MODE)
    keep = os.open(fifo, os.O_RDWR | os.O_CLOEXEC)  # Linux: never blocks; a writer until QEMU has opened it
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.set_blocking(reader, True)
        subprocess.Popen(
            [sys.executable, "-m", "nestor.engine.seriallog", str(vm_dir), str(cap)],
            stdin=reader, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True,
        )
    except BaseException:
        os.close(keep)
        raise
    finally:
        os.close(reader)
    return keep


def started(keep: int) -> None:
    """QEMU has opened the FIFO (or failed to start): QEMU is now the only writer."""
    os.close(keep)


def _open(log: Path, flags: int) -> int:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | flags, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


def pump(source: int, log: Path, cap: int, writers_gone: Callable[[], bool] = lambda: True) -> None:
    """Copy `source` to `log` until end of file with `writers_gone()`, rotating `log` before it
    would pass `cap`."""
    out = _open(log, os.O_APPEND)
    size = os.fstat(out).st_size
    try:
        while True:
            data = os.read(source, min(CHUNK, cap))
            if not data:
                if writers_gone():
                    return
                time.sleep(0.1)
                continue
            if size + len(data) > cap:
                os.close(out)
                os.replace(log, rotated(log))
                out = _open(log, os.O_TRUNC)
                size = 0
            try:
                os.write(out, data)
                size += len(data)
            except OSError:
                pass  # a full disk: drop the output, keep draining the guest's console
    finally:
        os.close(out)


def main(argv: list[str]) -> int:
    from .. import paths
    from . import process

    vm_dir, cap = Path(argv[0]), int(argv[1])
    try:
        pump(0, vm_dir / paths.SERIAL_LOG, cap, lambda: process.live_pid(vm_dir) is None)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
