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
