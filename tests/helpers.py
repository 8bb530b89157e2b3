"""Helpers for tests that drive the real CLI and real QEMU."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nestor import paths
from nestor.engine import process, swtpm

# Images are built once and kept between runs (CI runs on the same machine kind; the first run
# on a fresh machine builds them).
# TestClient's base URL: a Host the API answers for (api/guard.py; TestClient's own, testserver, is not)
LOCAL = "http://localhost"
CACHE = Path(os.environ.get("NESTOR_TEST_CACHE", "/var/cache/nestor-test"))


def nestor(home: Path, *args: str, netns: str | None = None, timeout: float = 120,
           check: bool = True, default_switch: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, as a user would. The test run turns the default switch
    off (tests/conftest.py); `default_switch` turns it back on for this command, only in a
    namespace of the test's (--netns)."""
    argv = [sys.executable, "-m", "nestor", "--home", str(home)]
    env = dict(os.environ)
    if default_switch:
        assert netns, "the default switch only in a namespace the test made (network safety)"
        env.pop("NESTOR_DEFAULT_SWITCH", None)
    if netns:
        argv += ["--netns", netns]
    result = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=timeout, check=False, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"nestor {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


def nestor_inprocess(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`nestor --home HOME ARGS…` in this process (for fast tests of the CLI over libvirt's drivers);
    the result as a subprocess run would give it. libvirt connections are closed afterwards, so the
    next command starts as a fresh process would."""
    from click.testing import CliRunner

    from nestor.cli import main
    from nestor.remote import libvirt_engine

    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        try:
            main(["--home", str(home), *args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            libvirt_engine.disconnect_all()
        result = subprocess.CompletedProcess(["nestor", *args], code, out.getvalue().decode(errors="replace"),
                                             err.getvalue().decode(errors="replace"))
    if check and code != 0:
        raise AssertionError(f"nestor {' '.join(args)} failed ({code}):\n{result.stdout}{result.stderr}")
    return result


def reap_home(home: Path) -> list[int]:
    """End every QEMU started under this home (ours only: live_pid checks the command line),
    each VM's swtpm, the home's daemon if one was started, and its NATs' dnsmasq (a namespace deleted under a
    running dnsmasq lives on with it)."""
    from nestor.net import dnsmasq
    from nestor.service import daemon

    killed = []
    daemon.stop(paths.Home(home), timeout=5)
    for vm_dir in sorted((home / "vms").glob("*")):
        pid = process.live_pid(vm_dir)
        if pid is not None:
            process.terminate(pid, timeout=3)
            killed.append(pid)
        tpm = swtpm.live_pid(vm_dir)
        if tpm is not None:
            swtpm.stop(vm_dir)
            killed.append(tpm)
    for pidfile in sorted((home / "net").glob("dnsmasq-*.pid")):
        pid = dnsmasq.live_pid(pidfile)
        if pid is not None and dnsmasq.stop(pidfile):
            killed.append(pid)
    return killed


def wait_for_text(path: Path, text: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    content = ""
    while time.monotonic() < deadline:
        if path.exists():
            content = path.read_text(errors="replace")
            if text in content:
                return content
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in {path} after {timeout} s; it has:\n{content[-3000:]}")


def vm_dir(home: Path, name: str) -> Path:
    import json

    out = nestor(home, "vm", "list", "-o", "json").stdout
    names = [vm["name"] for vm in json.loads(out)]
    assert name in names
    from nestor.state import db

    config = db.VMRepo(db.connect(home / paths.DB_NAME)).get(name)
    return home / "vms" / str(config.id)


def show(home: Path, name: str) -> dict[str, object]:
    """`nestor vm show NAME -o json`."""
    import json

    data: dict[str, object] = json.loads(nestor(home, "vm", "show", name, "-o", "json").stdout)
    return data


def in_l1(home: Path, *argv: str, timeout: float = 180) -> str:
    """Run argv inside the VM 'l1' through its guest agent; its stdout. On failure the message
    carries the tail of l1's console: a stalled L1 kernel says so there."""
    try:
        return nestor(home, "vm", "exec", "--timeout", str(timeout), "l1", "--", *argv, timeout=timeout + 30).stdout
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{vm_state(home, 'l1')}") from None


def vm_state(home: Path, name: str) -> str:
    """What a VM of HOME is doing, for a test's failure message about a level that stopped answering:
    the tail of its console, the QEMU process's CPU time over two seconds (spinning or idle), and
    each vCPU's instruction pointer and mode at two readings a second apart (stuck or moving)."""
    from nestor.engine.qmp import Monitor
    from nestor.errors import NestorError

    lines: list[str] = []
    try:
        directory = vm_dir(home, name)
        lines += ["--- serial.log, last lines ---",
                  *(directory / "serial.log").read_text(errors="replace").splitlines()[-40:]]
        pid = process.live_pid(directory)
        if pid is None:
            return "\n".join([*lines, f"--- {name}: no QEMU runs ---"])

        def cpu_ticks() -> int:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime

        before = cpu_ticks()
        readings = []
        with Monitor(directory / paths.QMP_SOCK, name, timeout=10.0) as mon:
            for _ in range(2):
                status = mon.execute("query-status")
                registers = mon.registers()
                readings.append(f"status {status}; " + "; ".join(
                    line.strip() for line in registers.splitlines()
                    if line.lstrip().startswith(("CPU#", "RIP=", "EFER=", "CR0=")) or "HLT=" in line))
                time.sleep(1.0)
        used = (cpu_ticks() - before) / os.sysconf("SC_CLK_TCK")
        lines += [f"--- {name}: QEMU pid {pid} used {used:.2f} s of CPU in ~2 s ---", *readings]
    except (OSError, AssertionError, NestorError, ValueError, IndexError) as exc:
        lines.append(f"--- {name}: state not read: {exc} ---")
    return "\n".join(lines)


class Daemon:
    """`nestor serve` of a home, run as a subprocess the way a user (or systemd) runs it."""

    def __init__(self, home: Path, socket: Path, *extra: str, netns: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.home = home
        self.socket = socket
        argv = [sys.executable, "-m", "nestor", "--home", str(home)]
        if netns:
            argv += ["--netns", netns]
        self.log = home.parent / f"serve-test-{home.name}.log"  # beside the home: nestor takes over no foreign file
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*argv, "serve", "--socket", str(socket), *extra],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env={**os.environ, **env} if env else None)

    def wait_ready(self, timeout: float = 30.0) -> None:
        import socket

        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nestor serve exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(self.socket))
                except OSError:
                    time.sleep(0.1)
                    continue
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://nestor") as http:
                assert http.get("/v1/vms", timeout=30).status_code == 200
            return
        raise AssertionError(f"nestor serve did not listen in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def wait_log(self, text: str, timeout: float = 60.0) -> None:
        """Until the daemon's log has `text` (it runs on meanwhile)."""
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no '{text}' in the daemon's log (exit {self.proc.poll()}):\n"
                                     f"{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> int | None:
        """SIGTERM (by our own PID), then SIGKILL after 10 s; the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def guest_home(root: Path, images: Path) -> Path:
    """A home whose image store is its own (imports and removals stay in the test) while the
    cached built images are shared: images/* and images/store/* are symlinks into the cache."""
    store = root / "images" / "store"
    store.mkdir(parents=True)
    for entry in images.iterdir():
        if entry.name != "store" and not entry.name.startswith("."):
            (root / "images" / entry.name).symlink_to(entry)
    if (images / "store").is_dir():
        for entry in (images / "store").iterdir():
            if not entry.name.startswith("."):
                (store / entry.name).symlink_to(entry)
    return root


def qemus(home: Path) -> list[int]:
    """Every QEMU on the machine whose command line names this home (with or without a pidfile)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu-system" in cmdline and str(home).encode() in cmdline:
                found.append(int(entry.name))
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def leftover_processes(base: str) -> dict[int, str]:
    """Live (not zombie) processes of a test run under directory `base` (ending in '/'), but not
    this process: those whose command line names it (QEMU, dnsmasq, daemons) and those working in
    it (swtpm names its state and socket relative to its working directory, the VM's tpm/)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        try:
            cwd = os.readlink(entry / "cwd") + "/"
        except OSError:
            cwd = ""
        if (base in cmdline or cwd.startswith(base)) and state != "Z":
            found[int(entry.name)] = cmdline.strip()
    return found


def no_debian_build(*args: Any, **kwargs: Any) -> Any:
    from nestor.errors import InvalidInput

    raise InvalidInput("(test) debian is not built here", hint="the API tests stub it")


def operations_ended(client: Any, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Every operation of an in-process API (a TestClient), once all have ended: one still queued
    when a test's stubs are taken away would run the real thing (a Debian build of minutes)."""
    deadline = time.monotonic() + timeout
    while True:
        ops = client.get("/v1/operations").json()
        busy = [op for op in ops if op.get("status") in ("pending", "running")]
        if not busy:
            return ops
        assert time.monotonic() < deadline, f"operations that did not end: {busy}"
        time.sleep(0.2)
