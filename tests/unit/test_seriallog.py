"""The serial log's cap: copytruncate under a writer that appends, as QEMU does (no QEMU needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nestor.engine import seriallog


def appender(log: Path) -> int:
    """A write end opened the way QEMU opens a chardev logfile with logappend=on."""
    return os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)


def test_rotation_copies_then_truncates_and_the_writer_continues_at_the_start(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    seriallog.prepare(log)
    fd = appender(log)
    try:
        os.write(fd, b"a" * 5000)
        assert not seriallog.enforce(log, 8192)  # under the cap: nothing happens
        os.write(fd, b"b" * 5000)
        assert seriallog.enforce(log, 8192)
        assert log.stat().st_size == 0
        os.write(fd, b"next")
        assert log.read_bytes() == b"next"  # O_APPEND: no hole of 10,000 zero bytes before it
    finally:
        os.close(fd)
    assert seriallog.rotated(log).read_bytes() == b"a" * 5000 + b"b" * 5000  # whole: followers lose nothing
    for path in (log, seriallog.rotated(log)):
        assert path.stat().st_mode & 0o777 == 0o600


def test_a_log_that_ran_away_unwatched_keeps_only_its_newest_cap(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    fd = appender(log)
    try:
        os.write(fd, b"o" * 30000 + b"n" * 8192)
    finally:
        os.close(fd)
    assert seriallog.enforce(log, 8192)
    assert seriallog.rotated(log).read_bytes() == b"n" * 8192 and log.stat().st_size == 0


def test_enforce_all_visits_every_vm_directory(tmp_path: Path) -> None:
    for index, size in enumerate((100, 9000, 20000)):
        (tmp_path / str(index)).mkdir()
        (tmp_path / str(index) / "serial.log").write_bytes(b"x" * size)
    assert seriallog.enforce_all(tmp_path, "serial.log", 8192) == 2
    assert [(tmp_path / str(i) / "serial.log").stat().st_size for i in range(3)] == [100, 0, 0]


def test_a_follower_reads_everything_in_order_across_rotations(tmp_path: Path) -> None:
    """`vm log --until` while QEMU appends and the cap rotates the file many times: every line
    arrives once, in order (the rest of the old file comes from serial.log.1)."""
    import threading
    import time

    from nestor.service import Service, VMSpec

    service = Service(tmp_path / "home")
    service.vm_new(VMSpec("f", kernel="/bin/true", memory=128 << 20))
    log = service.core.files(service.core.vms.get("f")).serial_log
    seriallog.prepare(log)
    cap = 8192
    os.environ[seriallog.MAX_LOG_ENV] = str(cap)
    # 88 KB at ~22 KB/s: a rotation every ~0.4 s, slower than the reader's 0.1 s polls (as with
    # the real 2 MiB cap and ~175 KB/s floods: one every ~12 s)
    lines = [b"line-%05d\n" % i for i in range(8000)]

    log.write_bytes(b"begin\n")
    following = threading.Event()

    def qemu() -> None:
        following.wait(30)
        fd = appender(log)
        try:
            for index in range(0, len(lines), 50):
                os.write(fd, b"".join(lines[index:index + 50]))
                seriallog.enforce(log, cap)  # as the daemon would, racing the reader
                time.sleep(0.025)
            os.write(fd, b"the-end\n")
        finally:
            os.close(fd)

    writer = threading.Thread(target=qemu)
    chunks = []
    try:
        writer.start()
        for chunk in service.vm_log("f", until="the-end", timeout=60):
            chunks.append(chunk)
            following.set()
    finally:
        following.set()
        writer.join()
        del os.environ[seriallog.MAX_LOG_ENV]
    got = b"".join(chunks)
    seen = [line for line in got.split(b"\n") if line.startswith(b"line-")]
    numbers = [int(line[5:]) for line in seen]
    assert numbers == sorted(numbers), "out of order"
    assert len(set(numbers)) == len(numbers), "a line twice"
    assert len(numbers) == len(lines), f"{len(lines) - len(numbers)} lines lost"


def test_the_daemon_caps_qemu_log_and_the_dnsmasq_logs_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """qemu.log (a guest can make QEMU print a line per crafted virtio-serial message) and the
    dnsmasq --log-dhcp log grew without bound on main: the daemon's cap now cuts them as serial.log."""
    import threading
    import time

    from nestor import paths
    from nestor.api.server import cap_logs

    cap = 8192
    monkeypatch.setenv(seriallog.MAX_LOG_ENV, str(cap))
    home = paths.Home(tmp_path / "home")
    logs = [home.root / "vms" / "1" / "qemu.log", home.root / "vms" / "1" / "serial.log",
            home.root / "net" / "dnsmasq-3.log"]
    small = home.root / "vms" / "2" / "qemu.log"
    for log in (*logs, small):
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_bytes(b"x" * (cap * 3 // 2 if log != small else 100))
    stop = threading.Event()
    watcher = threading.Thread(target=cap_logs, args=(home, stop))
    watcher.start()
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end and any(log.stat().st_size for log in logs):
            time.sleep(0.05)
    finally:
        stop.set()
        watcher.join()
    assert [log.stat().st_size for log in logs] == [0, 0, 0]
    assert all(seriallog.rotated(log).stat().st_size == cap * 3 // 2 for log in logs)
    assert small.stat().st_size == 100 and not seriallog.rotated(small).exists()


def test_a_start_cuts_a_qemu_log_past_the_cap(tmp_path: Path) -> None:
    """qemu.log is appended across starts: each start holds the cap too (the daemon may be down)."""
    from nestor import paths
    from nestor.engine import process
    from nestor.errors import EngineError

    log = tmp_path / paths.QEMU_LOG
    log.write_bytes(b"old\n" * (seriallog.MAX_LOG // 4 + 1))
    with pytest.raises(EngineError, match="exited at start"):
        process.spawn(["sh", "-c", "echo the last line; exit 3"], tmp_path, None)
    assert log.read_bytes() == b"the last line\n"
    assert seriallog.rotated(log).stat().st_size == seriallog.MAX_LOG + 4
    assert process.last_line(log) == "the last line"
