"""The serial log pump: capped, rotated, the newest output kept (no QEMU needed)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from nestor.engine import seriallog


def test_pump_caps_and_rotates(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"old boot\n" * 10)
    os.chmod(log, 0o644)
    data = b"".join(b"line-%06d\n" % i for i in range(100_000))  # 1.1 MB through a 16 KiB cap
    read, write = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(write, data) and None, os.close(write)))
    writer.start()
    seriallog.pump(read, log, 16 << 10)
    writer.join()
    os.close(read)
    current, older = log.read_bytes(), seriallog.rotated(log).read_bytes()
    assert 0 < len(current) <= 16 << 10 and 0 < len(older) <= 16 << 10
    assert (older + current).endswith(data[-(len(older) + len(current)):])  # the newest output, in order
    assert log.stat().st_mode & 0o777 == 0o600 and seriallog.rotated(log).stat().st_mode & 0o777 == 0o600


def test_pump_waits_while_the_writer_lives(tmp_path: Path) -> None:
    """An end of file before QEMU has opened the FIFO is not the end: the pump waits."""
    log = tmp_path / "serial.log"
    read, write = os.pipe()
    os.close(write)  # no writer yet
    calls = []

    def gone() -> bool:
        calls.append(1)
        return len(calls) >= 3

    seriallog.pump(read, log, 4096, gone)
    os.close(read)
    assert len(calls) == 3 and log.read_bytes() == b""
