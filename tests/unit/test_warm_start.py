"""`vm start` through the warm daemon (nestor/warm_start.py): which command lines and which daemons qualify.

A daemon qualifies only when it would start the VM exactly as this process would; here a real
process stands in for it (its command line is a daemon's, its context this process's or not).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nestor import model, paths, warm_start


@pytest.mark.parametrize(("args", "parsed"), [
    (["vm", "start", "web"], (None, "web")),
    (["--home", "/h", "vm", "start", "web-1"], ("/h", "web-1")),
    (["--home", "/h", "--netns", "ns", "vm", "start", "web"], None),  # another namespace: in-process
    (["--debug", "vm", "start", "web"], None),
    (["--remote", "r", "vm", "start", "web"], None),
    (["vm", "start", "l1/l2"], None),  # a level below: the CLI's own path
    (["vm", "start", "Web"], None),  # refused by the CLI with its own message
    (["vm", "start", "web", "--help"], None),
    (["vm", "start", "--help"], None),
    (["vm", "start"], None),
    (["--home=/h", "vm", "start", "web"], None),
    (["vm", "stop", "web"], None),
    ([], None),
])
def test_only_a_plain_vm_start_qualifies(args: list[str], parsed: tuple[str | None, str] | None) -> None:
    assert warm_start.parse(args) == parsed


def test_the_name_rule_is_the_models() -> None:
    assert warm_start.NAME.pattern == model.NAME_RE.pattern


@pytest.mark.parametrize("env_home", [None, "/var/tmp/some-home"])
def test_home_and_socket_are_where_paths_puts_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     env_home: str | None) -> None:
    if env_home is None:
        monkeypatch.delenv("NESTOR_HOME", raising=False)
    else:
        monkeypatch.setenv("NESTOR_HOME", env_home)
    assert warm_start.default_home() == str(paths.default_home())
    for root in (tmp_path / "h", Path(warm_start.default_home())):
        assert warm_start.api_socket(str(root)) == str(paths.Home(root).api_socket)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "h")
    assert warm_start.api_socket(str(link)) == str(paths.Home(tmp_path / "h").api_socket)


Spawn = Callable[..., int]


@pytest.fixture
def fake_daemon(tmp_path: Path) -> Iterator[tuple[Path, Spawn]]:
    """A home whose serve.pid names a process started by the test's function (args, env)."""
    home = tmp_path / "home"
    home.mkdir()
    started: list[subprocess.Popen[bytes]] = []

    def spawn(args: list[str], env: dict[str, str] | None = None) -> int:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *args], env=env)
        started.append(proc)
        (home / "serve.pid").write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and b"serve" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
            time.sleep(0.01)
        return proc.pid

    try:
        yield home, spawn
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


def test_a_daemon_in_the_same_context_qualifies(fake_daemon: tuple[Path, Spawn]) -> None:
    home, spawn = fake_daemon
    pid = spawn(["--home", str(home), "serve", "--on-demand"])
    assert warm_start.daemon_pid(str(home)) == pid


@pytest.mark.parametrize(("args", "env"), [
    (["--home", "{home}", "--netns", "ns", "serve"], {}),  # another network namespace
    (["--home", "{home}", "serve", "--socket", "/tmp/x.sock"], {}),  # another socket
    (["--home", "{home}", "serve", "--channel", "/dev/vport0p1"], {}),
    (["--home", "/elsewhere", "serve"], {}),  # another home's
    (["--home", "{home}", "sleep"], {}),  # not a daemon
    (["--home", "{home}", "serve"], {"NESTOR_QEMU_USER": "root"}),  # its QEMU would run as another user
    (["--home", "{home}", "serve"], {"PATH": "/nowhere"}),  # another qemu-system-x86_64
    (["--home", "{home}", "serve"], {"NESTOR_FAULT": "vm-start:after-spawn"}),
])
def test_a_daemon_that_would_start_it_differently_does_not(fake_daemon: tuple[Path, Spawn], args: list[str],
                                                           env: dict[str, str]) -> None:
    home, spawn = fake_daemon
    spawn([a.replace("{home}", str(home)) for a in args], {**os.environ, **env})
    assert warm_start.daemon_pid(str(home)) is None


def test_this_process_with_a_fault_set_does_not_use_the_daemon(fake_daemon: tuple[Path, Spawn],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    home, spawn = fake_daemon
    spawn(["--home", str(home), "serve"])
    monkeypatch.setenv("NESTOR_FAULT", "vm-start:after-spawn")  # a test's kill point is for this command
    assert warm_start.daemon_pid(str(home)) is None


def test_another_umask_does_not_qualify(fake_daemon: tuple[Path, Spawn]) -> None:
    home, spawn = fake_daemon
    mine = os.umask(0o022)
    os.umask(mine)
    old = os.umask(0o077 if mine != 0o077 else 0o027)
    try:
        spawn(["--home", str(home), "serve"])
    finally:
        os.umask(old)
    assert warm_start.daemon_pid(str(home)) is None


def test_no_daemon_means_the_cli_does_it(tmp_path: Path) -> None:
    assert warm_start.daemon_pid(str(tmp_path)) is None
    assert warm_start.run(["--home", str(tmp_path), "vm", "start", "web"]) is None
    (tmp_path / "serve.pid").write_text(f"{os.getpid()}\n")  # a live process that is no daemon
    assert warm_start.run(["--home", str(tmp_path), "vm", "start", "web"]) is None


def test_a_daemon_that_does_not_accept_means_the_cli_does_it(fake_daemon: tuple[Path, Spawn]) -> None:
    home, spawn = fake_daemon  # qualifies, but nothing listens on its socket
    spawn(["--home", str(home), "serve"])
    assert warm_start.daemon_pid(str(home)) is not None
    assert warm_start.run(["--home", str(home), "vm", "start", "web"]) is None


def test_chunked_bodies_are_read() -> None:
    assert warm_start._unchunk(b"4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n") == b'{"a":1}'
