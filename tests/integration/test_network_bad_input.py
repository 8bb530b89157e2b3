"""Bad network input through the CLI: one `error:` line (plus a hint), non-zero exit, no traceback."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import nestor


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    name = f"nt-{secrets.token_hex(4)}"
    assert sh("ip", "netns", "add", name).returncode == 0
    try:
        yield name
    finally:
        sh("ip", "netns", "del", name)


def refused(home: Path, ns: str | None, *args: str) -> str:
    result = nestor(home, *args, netns=ns, check=False)
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert lines and lines[0].startswith("error: "), result.stderr
    assert len(lines) <= 2 and all(line.startswith(("error: ", "hint: ")) for line in lines), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return result.stderr


def test_bad_network_input(tmp_path: Path, ns: str) -> None:
    home = tmp_path / "home"
    nestor(home, "switch", "new", "sw", "--type", "internal", netns=ns)
    nestor(home, "vm", "new", "v", "--kernel", "/bin/true", "--switch", "sw", netns=ns)
    assert "not found" in refused(home, ns, "switch", "show", "nope")
    assert "not found" in refused(home, ns, "vm", "new", "w", "--kernel", "/bin/true", "--switch", "nope")
    assert json.loads(nestor(home, "vm", "list", "-o", "json").stdout)[0]["name"] == "v"  # w never made
    assert "already exists" in refused(home, ns, "switch", "new", "sw", "--type", "private")
    assert "invalid MAC" in refused(home, ns, "adapter", "add", "v", "--switch", "sw", "--mac", "52:54:00:zz:00:01")
    assert "multicast" in refused(home, ns, "adapter", "add", "v", "--switch", "sw", "--mac", "03:00:00:00:00:01")
    assert "all zero" in refused(home, ns, "adapter", "add", "v", "--switch", "sw", "--mac", "00:00:00:00:00:00")
    assert "PREFIX" in refused(home, ns, "switch", "set-ip", "sw", "10.1.1.1")
    assert "invalid address" in refused(home, ns, "switch", "set-ip", "sw", "10.1.1.300/24")
    assert "no address" in refused(home, ns, "nat", "new", "n", "--switch", "sw", "--prefix", "10.1.1.0/24")
    nestor(home, "switch", "set-ip", "sw", "10.1.1.1/24", netns=ns)
    assert "host bits" in refused(home, ns, "nat", "new", "n", "--switch", "sw", "--prefix", "10.1.1.1/24")
    assert "invalid prefix" in refused(home, ns, "nat", "new", "n", "--switch", "sw", "--prefix", "10.1.1/xx")
    assert "outside the prefix" in refused(home, ns, "nat", "new", "n", "--switch", "sw", "--prefix", "10.2.0.0/16")
    assert "--type" in refused(home, ns, "switch", "new", "x", "--type", "bogus")
    stderr = refused(home, ns, "switch", "remove", "sw")
    assert "v/net0" in stderr and "--force" in stderr
    assert "does not exist" in refused(home, "nt-missing-x", "switch", "new", "y", "--type", "private")
    assert "ip netns add nt-missing-x" in refused(home, "nt-missing-x", "switch", "new", "y", "--type", "private")
    # Without CAP_NET_ADMIN (root with the capability dropped from its bounding set).
    result = subprocess.run(
        ["setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin", sys.executable, "-m", "nestor",
         "--home", str(home), "--netns", ns, "switch", "new", "z", "--type", "private"],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0 and "CAP_NET_ADMIN" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    nestor(home, "switch", "remove", "sw", "--force", netns=ns)
    assert nestor(home, "adapter", "list", "v", "-o", "json").stdout.strip() == "[]"
