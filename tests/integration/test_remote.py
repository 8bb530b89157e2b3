"""`nestor --remote NAME …` against a local `nestor serve --listen 127.0.0.1:PORT` (TLS + token):
the same output and exit codes as the same command run on the daemon's host."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestor import api_remotes
from nestor.images.appliance import BOOT_LINE
from tests.helpers import Daemon, nestor, reap_home, vm_dir, wait_for_text
from tests.integration.test_api_tcp import free_port

pytestmark = pytest.mark.vm


@pytest.fixture
def setup(home: Path, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(the daemon's home, a client home with the remote 'lab' added)."""
    run = Path(tempfile.mkdtemp(prefix="nt-rem-", dir="/tmp"))
    port = free_port()
    daemon = Daemon(home, run / "api.sock", "--listen", f"127.0.0.1:{port}")
    client_home = tmp_path / "client"
    try:
        daemon.wait_ready()
        token = nestor(home, "token", "new", "cli").stdout.strip()
        out = nestor(client_home, "remote", "add", "lab", f"https://127.0.0.1:{port}", "--token", token,
                     "--ca", str(home / "tls" / "ca.crt")).stdout
        assert out == "remote 'lab' added\n"
        yield home, client_home
    finally:
        daemon.stop()
        reap_home(home)
        shutil.rmtree(run, ignore_errors=True)


def both(server: Path, client: Path, *args: str) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
    """The command on the daemon's host, and through the remote: (exit code, stdout, stderr) each."""
    here = nestor(server, *args, check=False)
    there = nestor(client, "--remote", "lab", *args, check=False)
    return (here.returncode, here.stdout, here.stderr), (there.returncode, there.stdout, there.stderr)


def test_remote_registry(tmp_path: Path) -> None:
    home = tmp_path / "h"
    ca = tmp_path / "not-a-cert.pem"
    ca.write_text("hello\n")
    assert nestor(home, "remote", "list").stdout == "no remotes\n"
    for args, code, text in [
        (("remote", "add", "x", "http://h:1", "--token", "t"), 2, "invalid remote URL"),
        (("remote", "add", "x", "https://h:1"), 2, "needs --token"),
        (("remote", "add", "Bad Name", "https://h:1", "--token", "t"), 2, "invalid remote name"),
        (("remote", "add", "x", "https://h:1", "--token", "t", "--ca", str(ca)), 2, "not a PEM certificate"),
        (("remote", "add", "x", "https://h:1", "--token", "t", "--ca", str(tmp_path / "none")), 3, "cannot be read"),
        (("remote", "remove", "x"), 3, "remote 'x' not found"),
        (("--remote", "x", "vm", "list"), 3, "remote 'x' not found"),
    ]:
        result = nestor(home, *args, check=False)
        assert result.returncode == code and result.stderr.startswith("error: ") and text in result.stderr, (args, result)
        assert "hint: " in result.stderr and "Traceback" not in result.stderr
    nestor(home, "remote", "add", "x", "https://h:1", "--token", "secret")
    assert (home / api_remotes.FILE).stat().st_mode & 0o777 == 0o600
    assert nestor(home, "remote", "add", "x", "https://h:2", "--token", "t", check=False).returncode == 4
    listed = json.loads(nestor(home, "remote", "list", "-o", "json").stdout)
    assert listed == [{"name": "x", "url": "https://h:1", "token": True, "ca": False}]
    assert "secret" not in nestor(home, "remote", "list").stdout
    # commands that only run here say so
    for args in (("token", "list"), ("quickstart",), ("switch", "list"), ("vm", "log", "a"), ("image", "list")):
        result = nestor(home, "--remote", "x", *args, check=False)
        assert result.returncode == 2 and "--remote" in result.stderr, (args, result)
    nestor(home, "remote", "remove", "x")
    assert nestor(home, "remote", "list").stdout == "no remotes\n"


def test_remote_commands_match_local_ones(setup: tuple[Path, Path]) -> None:
    server, client = setup
    # vm new through the remote, then every read command gives the same answer both ways
    made = nestor(client, "--remote", "lab", "vm", "new", "web", "--memory", "256M")
    assert made.stdout == "vm 'web' created\n"
    for args in (("vm", "list"), ("vm", "list", "-o", "json"), ("vm", "show", "web"), ("vm", "show", "web", "-o", "json"),
                 ("tree",), ("tree", "-o", "json"), ("vm", "show", "ghost"), ("vm", "start", "ghost"),
                 ("vm", "new", "web"), ("vm", "new", "Bad!"), ("vm", "stop", "web"), ("vm", "remove", "ghost")):
        here, there = both(server, client, *args)
        assert here == there, args
    here, there = both(server, client, "host", "check", "-o", "json")
    assert here[0] == there[0] and json.loads(here[1])["checks"] == json.loads(there[1])["checks"]
    here, there = both(server, client, "host", "check")
    assert here[0] == there[0] and here[1] == there[1]

    started = nestor(client, "--remote", "lab", "vm", "start", "web")
    assert started.stdout.startswith("vm 'web' started (pid ") and ("tcg" in started.stdout or "kvm" in started.stdout)
    wait_for_text(vm_dir(server, "web") / "serial.log", BOOT_LINE)
    for args in (("vm", "list"), ("vm", "start", "web"), ("vm", "remove", "web"),
                 ("vm", "set-processor", "web", "--nested", "on")):
        here, there = both(server, client, *args)
        assert here == there, args
    shown = [json.loads(nestor(h, *r, "vm", "show", "web", "-o", "json").stdout) for h, r in
             ((server, ()), (client, ("--remote", "lab")))]
    for data in shown:
        data.pop("uptime")
    assert shown[0] == shown[1] and shown[0]["state"] == "running"

    stopped = nestor(client, "--remote", "lab", "vm", "stop", "web", "--turn-off")
    assert stopped.stdout == "vm 'web' turned off\n"
    assert json.loads(nestor(server, "vm", "show", "web", "-o", "json").stdout)["state"] == "off"
    assert nestor(client, "--remote", "lab", "vm", "remove", "web").stdout == "vm 'web' removed\n"
    assert nestor(server, "vm", "list").stdout == "no VMs\n"


def test_bad_token_is_refused(setup: tuple[Path, Path]) -> None:
    server, client = setup
    nestor(server, "token", "revoke", "cli")
    result = nestor(client, "--remote", "lab", "vm", "list", check=False)
    assert result.returncode == 11 and result.stderr.startswith("error: a valid bearer token is required")
    assert result.stdout == ""
