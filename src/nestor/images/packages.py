"""Debian package fetching: ``apt-get download`` of single packages (the kernel, busybox),
``dpkg-deb -x`` to unpack them, and ``mmdebstrap`` for whole root trees. Every image nestor
builds comes from Debian packages through here."""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from nestor.errors import ImageError

from .steps import Progress

KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
_TIMEOUT_QUICK = 120
_TIMEOUT_APT_UPDATE = 600
_TIMEOUT_DOWNLOAD = 900
APT_OPTIONS: tuple[str, ...] = ('APT::Install-Recommends "false"',)
# Documentation, man pages and translations are of no use in an L1 (~30 MB less to write).
DPKG_OPTIONS: tuple[str, ...] = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
_TIMEOUT_MMDEBSTRAP = 1800


def run(argv: Sequence[str], timeout: float, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise ImageError(f"{argv[0]} is not installed", hint=f"install the package that provides {argv[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageError(f"{' '.join(argv)} timed out after {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        detail = last_line(proc.stderr) or last_line(proc.stdout)
        raise ImageError(f"{' '.join(argv)} failed (exit {proc.returncode}): {detail}")
    return proc


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _apt_options() -> list[str]:
    # As root apt drops to the _apt user to download, which cannot write our temp dir.
    return ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []


def parse_depends(apt_cache_output: str, prefix: str = "linux-image-") -> str | None:
    """The first ``Depends:`` target starting with ``prefix`` in ``apt-cache depends`` output."""
    for line in apt_cache_output.splitlines():
        match = re.match(r"\s*\|?Depends:\s*(\S+)", line)
        if match and match.group(1).startswith(prefix):
            return match.group(1)
    return None


def _apt_update(progress: Progress) -> None:
    progress("apt lists are missing or stale: running apt-get update")
    run(["apt-get", "update"], timeout=_TIMEOUT_APT_UPDATE)


def resolve_kernel_package(progress: Progress) -> str:
    """The real package behind ``linux-image-cloud-amd64``, e.g. linux-image-6.1.0-28-cloud-amd64."""
    progress(f"resolving {KERNEL_METAPACKAGE}")
    for attempt in range(2):
        proc = run(["apt-cache", "depends", KERNEL_METAPACKAGE], timeout=_TIMEOUT_QUICK, check=False)
        package = parse_depends(proc.stdout) if proc.returncode == 0 else None
        if package is not None:
            return package
        if attempt == 0:
            _apt_update(progress)
    raise ImageError(
        f"cannot resolve package {KERNEL_METAPACKAGE}", hint="check the apt sources (Debian main) and run apt-get update"
    )


def apt_download(package: str, dest: Path, progress: Progress) -> Path:
    """``apt-get download package`` into ``dest``; returns the .deb (apt-get update once if needed)."""
    progress(f"downloading {package}")
    argv = ["apt-get", "download", *_apt_options(), package]
    proc = run(argv, timeout=_TIMEOUT_DOWNLOAD, cwd=dest, check=False)
    if proc.returncode != 0:
        _apt_update(progress)
        proc = run(argv, timeout=_TIMEOUT_DOWNLOAD, cwd=dest, check=False)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not debs:
        raise ImageError(
            f"cannot download package {package}: {last_line(proc.stderr)}", hint="check the apt sources and run apt-get update"
        )
    return debs[0]


def dpkg_extract(deb: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    run(["dpkg-deb", "-x", str(deb), str(dest)], timeout=_TIMEOUT_QUICK)


def run_mmdebstrap(target: Path, log: Path, progress: Progress, argv: Sequence[str] | None = None,
                   what: str = "nested-host image") -> None:
    """Run mmdebstrap into ``target``; its ``I:``/``W:``/``E:`` lines go to ``progress``,
    everything to ``log``. Raises ImageError naming the step on failure. ``argv`` (default: the
    nested-host's) lets other images run their own mmdebstrap; ``what`` names them in errors."""
    if argv is None:
        from .rootfs import mmdebstrap_argv

        argv = mmdebstrap_argv(target)
    argv = list(argv)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
    except FileNotFoundError as exc:
        raise ImageError("mmdebstrap is not installed",
                         hint="apt-get install -y --no-install-recommends mmdebstrap") from exc
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        proc.kill()

    timer = threading.Timer(_TIMEOUT_MMDEBSTRAP, expire)
    timer.start()
    tail: deque[str] = deque(maxlen=40)
    try:
        with log.open("w") as sink:
            sink.write(" ".join(argv) + "\n")
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip()
                sink.write(line + "\n")
                tail.append(line)
                if interesting_mmdebstrap_line(line):
                    progress(line)
        code = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    if code != 0:
        detail = mmdebstrap_error(list(tail)) or f"exit status {code}"
        if expired.is_set():
            detail = f"timed out after {_TIMEOUT_MMDEBSTRAP} s"
        raise ImageError(f"{what}: step mmdebstrap failed: {detail}",
                         hint=f"check that the Debian mirror is reachable (apt-get update); "
                              f"the full output is in {log}")


def interesting_mmdebstrap_line(line: str) -> bool:
    return line.startswith(("I: ", "W: ", "E: "))


def mmdebstrap_error(lines: Sequence[str]) -> str:
    """The most telling line of a failed mmdebstrap: its first ``E:`` line, else the last line."""
    errors = [line for line in lines if line.startswith("E: ")]
    if errors:
        return errors[0][3:].strip()
    rest = [line for line in lines if line.strip()]
    return rest[-1].strip() if rest else ""
