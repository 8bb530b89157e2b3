"""Memory on real appliance VMs under TCG: dynamic memory, live resize, save/restore, bad input.

Assertions are about direction and bounds, never exact numbers or timings; the figures the
dynamic test measures are printed (pytest -s) for the record.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestor import paths
from nestor.engine import process
from nestor.images.appliance import BOOT_LINE
from nestor.model import parse_size
from nestor.policy import memory as rules
from nestor.service import daemon
from tests.helpers import nestor, reap_home, show, vm_dir, wait_for_text

pytestmark = pytest.mark.vm
M = 1 << 20


@pytest.fixture
def mhome(home: Path) -> Iterator[Path]:
    """`home`, and no daemon (the balancer's host) left behind either."""
    try:
        yield home
    finally:
        reap_home(home)
        assert daemon.running_pid(paths.Home(home)) is None


def balancer_pid(home: Path) -> int | None:
    """The balancer runs in the home's daemon (`nestor serve`, started on demand)."""
    return daemon.running_pid(paths.Home(home))



def assigned(home: Path, name: str) -> int | None:
    value = show(home, name).get("memory_assigned")
    return parse_size(str(value)) if value else None


def boot(home: Path, name: str, script: str, *settings: str, memory_size: str = "256M") -> Path:
    run = home / f"{name}.sh"
    run.write_text(script)
    nestor(home, "vm", "new", name, "--run", str(run), "--memory", memory_size)
    if settings:
        nestor(home, "vm", "set-memory", name, *settings)
    nestor(home, "vm", "start", name)
    directory = vm_dir(home, name)
    wait_for_text(directory / paths.SERIAL_LOG, BOOT_LINE)
    return directory


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def memtotals(text: str, tag: str) -> list[int]:
    return [int(kb) * 1024 for kb in re.findall(rf"^{tag} MemTotal=(\d+)", text, re.M)]


MEMINFO = "awk '/^MemTotal|^MemAvailable/{printf \"%s=%s \", substr($1, 1, length($1)-1), $2}' /proc/meminfo"

# Idle until the balancer has taken memory back (MemTotal under ~310M), then fill a tmpfs
# 8M at a time, hold it, free it.
DYNAMIC_SCRIPT = f"""#!/bin/sh
mem() {{ echo "$1 $({MEMINFO})"; }}
mkdir -p /mnt/t && mount -t tmpfs -o size=600M tmpfs /mnt/t
n=0
while [ $n -lt 60 ] && [ "$(awk '/^MemTotal/{{print $2}}' /proc/meminfo)" -gt 320000 ]; do
    mem idle; sleep 0.5; n=$((n + 1))
done
mem idle; echo "=phase idle-done"
n=0
while [ $n -lt 24 ]; do
    dd if=/dev/zero of=/mnt/t/f$n bs=1M count=8 2>/dev/null; mem alloc; n=$((n + 1)); sleep 0.5
done
echo "=phase allocated"
n=0; while [ $n -lt 6 ]; do mem full; sleep 1; n=$((n + 1)); done
rm -f /mnt/t/f*; echo "=phase freed"
while true; do mem free; sleep 1; done
"""


def test_dynamic_memory_follows_demand(mhome: Path) -> None:
    started = time.monotonic()
    directory = boot(mhome, "d", DYNAMIC_SCRIPT, "--dynamic", "on", "--minimum", "128M", "--maximum", "768M",
                     "--buffer", "100", memory_size="512M")
    log = directory / paths.SERIAL_LOG
    assert balancer_pid(mhome) is not None
    info = show(mhome, "d")
    assert info["dynamic_memory"] is True and info["memory_room"] == "768M" and info["memory_minimum"] == "128M"
    samples: list[tuple[float, str, int]] = []

    def sample_until(text: str, timeout: float, phase: str) -> None:
        deadline = time.monotonic() + timeout
        while text not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, f"{text!r} not printed in time:\n{log.read_text()[-2000:]}"
            got = assigned(mhome, "d")
            if got is not None:
                samples.append((time.monotonic() - started, phase, got))

    sample_until("=phase idle-done", 40, "idle")
    idle_done = time.monotonic() - started
    idle_level = min(s[2] for s in samples)
    assert idle_level < 512 * M, samples  # an idle guest gives memory back
    sample_until("=phase allocated", 40, "alloc")
    pid = process.live_pid(directory)
    assert pid is not None
    sample_until("=phase freed", 20, "full")
    peak = max(s[2] for s in samples)
    rss_full = rss(pid)
    freed_at = time.monotonic() - started
    assert peak > idle_level + 100 * M, samples  # it grew with the demand
    deadline = time.monotonic() + 30
    while True:
        got = assigned(mhome, "d")
        if got is not None:
            samples.append((time.monotonic() - started, "free", got))
            if got < peak - 100 * M:
                break
        assert time.monotonic() < deadline, samples
        time.sleep(0.5)
    back_at = samples[-1][0]
    # Let it settle (no change for 5 s, at most 20 s more), then measure what the host got back.
    settle_deadline = time.monotonic() + 20
    while time.monotonic() < settle_deadline:
        time.sleep(0.5)
        got = assigned(mhome, "d")
        if got is not None:
            samples.append((time.monotonic() - started, "free", got))
        changes = [t for (_, _, v), (t, _, w) in itertools.pairwise(samples) if v != w]
        if changes and samples[-1][0] - max(changes) > 5:
            break
    settled = samples[-1][2]
    settled_at = max(t for (_, _, v), (t, _, w) in itertools.pairwise(samples) if v != w)
    rss_after = rss(pid)
    assert all(128 * M <= value <= 768 * M for _, _, value in samples), samples
    text = log.read_text(errors="replace")
    assert max(memtotals(text, "full")) > min(memtotals(text, "idle")) + 100 * M
    assert max(memtotals(text, "free")[-1:]) < max(memtotals(text, "full"))
    balancer_log = paths.Home(mhome).daemon_log.read_text()
    assert "vm 'd': grow to" in balancer_log and "vm 'd': shrink to" in balancer_log
    print(f"\n[figures] startup 512M; idle guest down to {idle_level >> 20}M after {idle_done:.1f} s "
          f"(from vm start); peak {peak >> 20}M; freed at {freed_at:.1f} s, below {((peak >> 20) - 100)}M "
          f"{back_at - freed_at:.1f} s later, settled at {settled >> 20}M {settled_at - freed_at:.1f} s after the free; "
          f"QEMU RSS {rss_full >> 20}M full -> {rss_after >> 20}M settled; "
          f"samples {[(round(t, 1), p, v >> 20) for t, p, v in samples]}")

    # The VM stops: the balancer forgets it (its status goes with QEMU).
    nestor(mhome, "vm", "stop", "d", "--turn-off")
    assert not (directory / paths.BALANCER_STATUS).exists()
    time.sleep(2 * rules.CYCLE + 0.5)
    assert not (directory / paths.BALANCER_STATUS).exists()


RESIZE_SCRIPT = f"""#!/bin/sh
mkdir -p /mnt/t && mount -t tmpfs -o size=400M tmpfs /mnt/t
dd if=/dev/zero of=/mnt/t/used bs=1M count=100 2>/dev/null
while true; do echo "tick $({MEMINFO})"; sleep 1; done
"""


def wait_memtotal(log: Path, check: object, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        values = memtotals(log.read_text(errors="replace"), "tick")
        if values and check(values[-1]):  # type: ignore[operator]
            return values[-1]
        time.sleep(0.3)
    raise AssertionError(f"MemTotal did not change as expected: {memtotals(log.read_text(errors='replace'), 'tick')[-5:]}")


def wait_settled(log: Path, timeout: float = 30) -> int:
    """MemTotal once it stopped moving (three ticks alike): a balloon arrives in steps under TCG."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        values = memtotals(log.read_text(errors="replace"), "tick")
        if len(values) >= 3 and values[-1] == values[-2] == values[-3]:
            return values[-1]
        time.sleep(0.5)
    raise AssertionError(f"MemTotal did not settle: {memtotals(log.read_text(errors='replace'), 'tick')[-5:]}")


def test_runtime_resize_static(mhome: Path) -> None:
    directory = boot(mhome, "r", RESIZE_SCRIPT, "--maximum", "512M")
    log = directory / paths.SERIAL_LOG
    before = wait_memtotal(log, lambda v: v < 256 * M)
    assert show(mhome, "r")["memory_room"] == "512M"
    assert balancer_pid(mhome) is not None  # static: no balancing, but the daemon caps every VM's serial log

    nestor(mhome, "vm", "set-memory", "r", "--startup", "448M")
    grown = wait_memtotal(log, lambda v: v > before + 150 * M)
    assert assigned(mhome, "r") == 448 * M and show(mhome, "r")["memory"] == "448M"

    nestor(mhome, "vm", "set-memory", "r", "--startup", "240M")
    wait_memtotal(log, lambda v: v < grown - 150 * M)
    shrunk = wait_settled(log)

    # The guest uses ~100M of tmpfs plus its own: shrinking below that is refused, nothing changes.
    result = nestor(mhome, "vm", "set-memory", "r", "--startup", "128M", check=False)
    assert result.returncode == 5 and "cannot shrink to 128M" in result.stderr and "Traceback" not in result.stderr
    assert show(mhome, "r")["memory"] == "240M" and assigned(mhome, "r") == 240 * M

    # Beyond the room QEMU was started with: a clear error naming the limit; the VM must be off.
    result = nestor(mhome, "vm", "set-memory", "r", "--startup", "600M", check=False)
    assert result.returncode == 5
    assert "started with room for 512M" in result.stderr and "while it is off" in result.stderr
    assert memtotals(log.read_text(errors="replace"), "tick")[-1] == shrunk

    nestor(mhome, "vm", "stop", "r", "--turn-off")
    nestor(mhome, "vm", "set-memory", "r", "--startup", "600M")  # off: always works
    assert show(mhome, "r")["memory"] == "600M" and show(mhome, "r")["memory_maximum"] == "600M"


COUNTER_SCRIPT = """#!/bin/sh
i=0
while true; do echo "count $i"; i=$((i + 1)); sleep 0.5; done
"""


def counts(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"^count (\d+)", text, re.M)]


def test_save_and_restore_continue_the_guest(mhome: Path) -> None:
    directory = boot(mhome, "c", COUNTER_SCRIPT, "--dynamic", "on", "--minimum", "128M", "--maximum", "512M")
    log = directory / paths.SERIAL_LOG
    wait_for_text(log, "count 6")
    out = nestor(mhome, "vm", "save", "c").stdout
    assert "saved" in out
    assert process.live_pid(directory) is None and not (directory / paths.BALANCER_STATUS).exists()
    assert (directory / paths.SAVED_STATE).stat().st_size > 0
    assert show(mhome, "c")["state"] == "saved"
    text = log.read_text(errors="replace")
    before = counts(text)[-1]
    assert before >= 6
    time.sleep(1.5)  # the guest does not run while saved
    assert counts(log.read_text(errors="replace"))[-1] == before

    nestor(mhome, "vm", "start", "c")
    assert show(mhome, "c")["state"] == "running"
    assert not (directory / paths.SAVED_STATE).exists()
    assert balancer_pid(mhome) is not None  # dynamic memory resumes too
    deadline = time.monotonic() + 20
    while len(counts(log.read_text(errors="replace")[len(text):])) < 3:
        assert time.monotonic() < deadline, log.read_text()[-1500:]
        time.sleep(0.2)
    after = log.read_text(errors="replace")[len(text):]
    resumed = counts(after)
    assert resumed[0] in (before, before + 1) and resumed == sorted(resumed), resumed  # continues, no restart
    assert BOOT_LINE not in after

    nestor(mhome, "vm", "save", "c")
    result = nestor(mhome, "vm", "save", "c", check=False)
    assert result.returncode == 5 and "already saved" in result.stderr
    result = nestor(mhome, "vm", "set-memory", "c", "--startup", "300M", check=False)
    assert result.returncode == 5 and "is saved" in result.stderr
    result = nestor(mhome, "vm", "set-processor", "c", "--count", "2", check=False)
    assert result.returncode == 5 and "is saved" in result.stderr and show(mhome, "c")["vcpus"] == 1
    # Turning off a saved VM discards its saved state (Hyper-V's Delete Saved State).
    assert "discarded" in nestor(mhome, "vm", "stop", "c", "--turn-off").stdout
    assert show(mhome, "c")["state"] == "off" and not (directory / paths.SAVED_STATE).exists()
    # Saved again, then removed: the state file goes with the VM.
    nestor(mhome, "vm", "start", "c")
    nestor(mhome, "vm", "save", "c")
    assert (directory / paths.SAVED_STATE).exists()
    nestor(mhome, "vm", "remove", "c")
    assert not directory.exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--startup", "abc"), 2, "invalid startup size 'abc'"),
        (("--startup", "0"), 2, "startup size must be more than zero"),
        (("--startup", "16M"), 2, "startup memory 16M is too small"),
        (("--startup", "100T"), 4, "more than the host has"),  # 409 over the API: this host's limit
        (("--minimum", "1G"), 2, "minimum memory 1G is more than startup memory 256M"),
        (("--minimum", "x"), 2, "invalid minimum size 'x'"),
        (("--maximum", "100T"), 4, "maximum memory 102400G is more than the host has"),
        (("--dynamic", "on", "--maximum", "128M"), 2, "startup memory 256M is more than maximum memory 128M"),
        (("--dynamic", "maybe"), 2, "Invalid value for '--dynamic'"),
        (("--buffer", "4"), 2, "memory buffer 4% is out of range (5 to 2000 %)"),
        (("--buffer", "2001"), 2, "out of range"),
        (("--buffer", "lots"), 2, "invalid memory buffer 'lots'"),
        ((), 2, "nothing to change"),
    ],
)
def test_set_memory_bad_input(mhome: Path, args: tuple[str, ...], code: int, message: str) -> None:
    nestor(mhome, "vm", "new", "b", "--memory", "256M")
    before = show(mhome, "b")
    result = nestor(mhome, "vm", "set-memory", "b", *args, check=False)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert show(mhome, "b") == before


def test_unknown_vm_and_save_of_off_vm(mhome: Path) -> None:
    result = nestor(mhome, "vm", "set-memory", "nope", "--startup", "1G", check=False)
    assert result.returncode == 3 and "not found" in result.stderr
    nestor(mhome, "vm", "new", "o", "--memory", "256M")
    result = nestor(mhome, "vm", "save", "o", check=False)
    assert result.returncode == 5 and "not running" in result.stderr
    result = nestor(mhome, "vm", "save", "nope", check=False)
    assert result.returncode == 3


def test_a_lost_balancer_is_restarted_by_the_next_command(mhome: Path) -> None:
    boot(mhome, "lost", "#!/bin/sh\ntrue\n", "--dynamic", "on", "--minimum", "128M", "--maximum", "512M")
    pid = balancer_pid(mhome)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # as if it died, or nestor died before starting it
    process.wait_exit(pid, 10)
    assert balancer_pid(mhome) is None
    assert show(mhome, "lost")["memory_balancer"] == "restarted"
    assert balancer_pid(mhome) not in (None, pid)
