"""Shared bits for benchmarks: medians, a results file, a scratch nestor home with cached images."""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CACHE_IMAGES = Path(os.environ.get("NESTOR_TEST_CACHE", "/var/cache/nestor-test")) / "images"


def scratch_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="nestor-bench-"))
    CACHE_IMAGES.mkdir(parents=True, exist_ok=True)
    (home / "images").symlink_to(CACHE_IMAGES)
    return home


def nestor(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), *args],
                          capture_output=True, text=True, check=True, timeout=300)


def wait_for(path: Path, text: str, offset: int, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                if text.encode() in f.read():
                    return time.monotonic()
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise TimeoutError(f"{text!r} not in {path}")


def raw_argv(argv: list[str]) -> list[str]:
    """nestor's QEMU argv as a user would run it by hand (QEMU logs the console into serial.log
    itself; nestor's daemon only rotates that file)."""
    return list(argv)


def relocate_argv(argv: list[str], old_dir: Path, new_dir: Path) -> list[str]:
    """``argv`` with every path under ``old_dir`` (disks, seed, sockets, pidfile, serial log)
    moved under ``new_dir``: the same QEMU command on a copy of the VM's files, so a raw run
    never shares a disk, a socket or a pidfile with nestor's VM."""
    old, new = f"{old_dir}/", f"{new_dir}/"
    return [arg.replace(old, new) for arg in argv]


def drive_files(argv: list[str], under: Path) -> list[Path]:
    """The ``file=`` of every ``-drive`` in ``argv`` that lies under ``under`` (the VM's own
    overlay, data disks, seed, NVRAM; not the shared firmware or image store)."""
    files: list[Path] = []
    for option, value in itertools.pairwise(argv):
        if option != "-drive":
            continue
        for part in value.split(","):
            if part.startswith("file="):
                path = Path(part.removeprefix("file="))
                if path.is_relative_to(under) and path not in files:
                    files.append(path)
    return files


def qemu_user(argv: list[str]) -> str | None:
    """The user QEMU drops root to (``-runas NAME`` or ``-run-with user=NAME``), if any."""
    for option, value in itertools.pairwise(argv):
        if option == "-runas":
            return value
        if option == "-run-with":
            for part in value.split(","):
                if part.startswith("user="):
                    return part.removeprefix("user=")
    return None


def tap_names(argv: list[str]) -> list[str]:
    """The tap interfaces of ``-netdev tap,…,ifname=NAME``."""
    taps: list[str] = []
    for option, value in itertools.pairwise(argv):
        if option == "-netdev" and value.startswith("tap,"):
            taps += [part.removeprefix("ifname=") for part in value.split(",") if part.startswith("ifname=")]
    return taps


def tap_fds(argv: list[str]) -> list[int]:
    """The descriptor numbers of ``-netdev tap,…,fd=N`` (nestor passes its taps' descriptors)."""
    fds: list[int] = []
    for option, value in itertools.pairwise(argv):
        if option == "-netdev" and value.startswith("tap,"):
            fds += [int(part.removeprefix("fd=")) for part in value.split(",") if part.startswith("fd=")]
    return fds


def summary(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}


def record(name: str, data: dict[str, object]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node(),
            "cpus": os.cpu_count(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), **data}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(data, indent=2))
    return path


class LoadSampler:
    """The host's load average, sampled every `every` seconds in a thread while a bench runs
    (the machine is shared: the numbers of a run mean little without the load beside them)."""

    def __init__(self, every: float = 5.0) -> None:
        import threading

        self.every = every
        self.samples: list[tuple[float, float]] = []  # (seconds since start, 1-minute load)
        self.marks: dict[str, list[float]] = {}  # phase → (1, 5, 15)-minute load when it began
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every + 1)

    def _run(self) -> None:
        while True:
            self.samples.append((round(time.monotonic() - self._start, 1), os.getloadavg()[0]))
            if self._stop.wait(self.every):
                return

    def mark(self, phase: str) -> None:
        self.marks[phase] = [round(x, 2) for x in os.getloadavg()]

    def to_json(self) -> dict[str, object]:
        ones = [load for _, load in self.samples] or [os.getloadavg()[0]]
        return {"one_minute": {"min": round(min(ones), 2), "median": round(statistics.median(ones), 2),
                               "max": round(max(ones), 2), "n": len(ones), "every_s": self.every},
                "at_phase_start": self.marks, "end": [round(x, 2) for x in os.getloadavg()]}


def bench_env() -> dict[str, str]:
    """The environment of a bench's nestor commands: no default network (every switch is in the
    bench's own namespace)."""
    return {**os.environ, "NESTOR_DEFAULT_SWITCH": "none"}


def nestor_timed(home: Path, *args: str, netns: str | None = None, timeout: float = 900,
                 check: bool = True) -> tuple[float, subprocess.CompletedProcess[str]]:
    """(wall seconds, result) of one CLI command, a new process as a user runs it."""
    argv = [sys.executable, "-m", "nestor", "--home", str(home), *(["--netns", netns] if netns else []), *args]
    start = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=bench_env())
    wall = time.monotonic() - start
    if check and result.returncode != 0:
        raise SystemExit(f"nestor {' '.join(args)} failed ({result.returncode}) after {wall:.1f} s:\n"
                         f"{result.stdout[-2000:]}{result.stderr[-3000:]}")
    return wall, result


def new_netns(prefix: str = "nb") -> str:
    """A network namespace of the bench's own (lo up, no IPv4 forwarding, as the tests make them)."""
    import secrets

    name = f"{prefix}-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "netns", "exec", name, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0"], check=True)
    return name


def reap(home: Path, namespaces: list[str]) -> list[int]:
    """End every QEMU, swtpm, dnsmasq and daemon of `home` by its pid (tests/helpers.reap_home, the
    suite's own), then delete the namespaces (the bench's and the quickstart's own, if still there)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.helpers import reap_home

    killed = reap_home(home)
    for name in namespaces:
        if Path("/run/netns", name).exists():
            subprocess.run(["ip", "netns", "delete", name], check=False)
    return killed
