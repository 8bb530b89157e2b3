"""The bad-input corpus: every command and option fed input it must refuse.

Each case asserts a non-zero exit, exactly one `error: …` line followed by one `hint: …` line,
no traceback, and that nothing changed: the database's content, the home's files, the home's
QEMU processes, and the links and nft ruleset of the test's network namespace are compared
before and after. The home holds a switch with an address, a NAT, an Off VM, a running VM and
a saved VM, so state rules are exercised too.

The CLI runs in-process (nestor.cli.main with click's stream isolation, SystemExit captured):
the same code path as the `nestor` binary minus the interpreter start, so 200+ cases take seconds.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nestor import paths
from nestor.cli.main import main
from nestor.engine import process
from nestor.service import daemon
from tests.helpers import nestor, reap_home

pytestmark = pytest.mark.timeout(300)

NS_PREFIX = "nt-"
BAD_NAMES = ["", "Web", "web\n", "\nweb", "we\nb", "a/b", "..", "-a", "a-", "a_b", "é", "x" * 33,
             "web\x1b[2J", "a b", "web\t", "a,b"]
SOME_BAD_NAMES = ["web\n", "a/b", "x" * 33, "Web"]
BAD_TIMEOUTS = ["nan", "inf", "-inf", "0", "-1", "1e9", "abc"]


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    expect: str | None = None  # a substring of the error line
    home: str | None = None  # None: the corpus home; otherwise --home HOME (and no --netns)
    netns: str | None = None  # overrides the test namespace
    absent: str | None = None  # a path that must still not exist afterwards (a mistyped home)
    stdin: bytes | None = None  # what the command reads on standard input

    @property
    def id(self) -> str:
        return " ".join(self.args)[:60].encode("unicode_escape").decode()


def c(*args: str, expect: str | None = None, **kw: Any) -> Case:
    return Case(tuple(args), expect, **kw)


def _cases(tmp: Path) -> list[Case]:
    """The corpus; `tmp` holds files made for --run/--kernel cases (see the `files` fixture)."""
    cases: list[Case] = []
    # -- names, everywhere a name is taken ----------------------------------------------------
    for name in BAD_NAMES:
        why = None if name.startswith("-") else "name"  # '-a' is an unknown option to click: refused too
        cases.append(c("vm", "new", name, expect=why))
        cases.append(c("switch", "new", name, "--type", "private", expect=why))
        cases.append(c("nat", "new", name, "--switch", "sw", "--prefix", "10.77.0.0/24", expect=why))
        cases.append(c("adapter", "add", "off1", "--switch", "sw", "--name", name, expect="name"))
    for name in SOME_BAD_NAMES:
        for args in (("vm", "show", name), ("vm", "start", name), ("vm", "stop", name), ("vm", "remove", name),
                     ("vm", "set-processor", name, "--count", "2"), ("vm", "upgrade", name), ("vm", "log", name),
                     ("vm", "save", name), ("vm", "exec", name, "true"), ("vm", "console", name),
                     ("vm", "set-memory", name, "--startup", "256M"), ("switch", "show", name),
                     ("switch", "remove", name), ("switch", "set-ip", name, "10.9.9.1/24"), ("adapter", "list", name),
                     ("adapter", "set", name, "--mac-spoofing", "on"), ("adapter", "remove", "off1", name),
                     ("nat", "remove", name), ("token", "new", name), ("vm", "reset-disk", name, "--yes")):
            cases.append(c(*args))
    cases.append(c("vm", "new", "v", "--switch", "bad\nsw", expect="switch"))
    cases.append(c("vm", "exec", "off1/a\nb", "true", expect="name"))
    # -- sizes ----------------------------------------------------------------------------------
    for size, why in (("1K", "too small"), ("1", "too small"), ("1000K", "too small"), ("512B", "too small"),
                      ("31M", "too small"), ("33000K", "whole number of MiB"), ("0", "more than zero"),
                      ("-1G", "invalid"), ("abc", "invalid"), ("²", "invalid"), ("1.5G", "invalid"),
                      ("100T", "more than the host"), ("1e3", "invalid"), ("", "invalid"), ("0x40", "invalid"),
                      ("512M\n", "invalid"), ("٣M", "invalid")):
        cases.append(c("vm", "new", "m", "--memory", size, expect=why))
    for option in ("--startup", "--minimum", "--maximum"):
        for size in ("1K", "512B", "²", "-5M", "100T"):
            cases.append(c("vm", "set-memory", "off1", option, size))
    for buffer in ("²", "abc", "-5", "4", "2001", "1.5", "", "20%%", "٣"):
        cases.append(c("vm", "set-memory", "off1", "--dynamic", "on", "--buffer", buffer, expect="buffer"))
    cases.append(c("vm", "set-memory", "off1", "--minimum", "512M", "--startup", "256M", expect="minimum"))
    cases.append(c("vm", "set-memory", "off1", "--dynamic", "maybe"))
    for vcpus in ("0", "-1", "100000", "many", "1.5"):
        cases.append(c("vm", "new", "p", "--vcpus", vcpus))
        cases.append(c("vm", "set-processor", "off1", "--count", vcpus))
    # -- timeouts -------------------------------------------------------------------------------
    for t in BAD_TIMEOUTS:
        cases.append(c("vm", "stop", "run1", "--timeout", t))
        cases.append(c("vm", "exec", "--timeout", t, "run1", "true"))
        cases.append(c("vm", "log", "run1", "--follow", "--timeout", t))
        cases.append(c("tree", "--timeout", t))
    # -- the home and the namespace -------------------------------------------------------------
    long_home = "/tmp/" + "h" * 100
    for home, why in (("", "empty"), ("/tmp/a,b", "','"), (long_home, "too long"), ("/tmp/x\ny", "control")):
        for args in (("vm", "list"), ("vm", "new", "x"), ("switch", "list"), ("vm", "show", "off1")):
            cases.append(c(*args, expect=why, home=home, absent=home if home.startswith("/") else None))
    missing = str(tmp / "no-such-home")
    for args in (("vm", "list"), ("vm", "show", "off1"), ("vm", "start", "off1"), ("switch", "list"),
                 ("nat", "list"), ("adapter", "list", "off1"), ("tree",), ("vm", "set-processor", "off1", "--count", "2")):
        cases.append(c(*args, expect="does not exist", home=missing, absent=missing))
    for netns in ("bad/ns", "ns\n", "..", "", "-x", "a b", "n" * 65):
        cases.append(c("vm", "list", expect="namespace", netns=netns))
        cases.append(c("switch", "new", "s2", "--type", "private", expect="namespace", netns=netns))
    # -- boot sources -----------------------------------------------------------------------------
    run = tmp / "files"
    cases += [
        c("vm", "new", "r", "--run", str(run), expect="not a regular file"),
        c("vm", "new", "r", "--run", "/dev/zero", expect="not a regular file"),
        c("vm", "new", "r", "--run", str(run / "fifo"), expect="not a regular file"),
        c("vm", "new", "r", "--run", str(run / "big.sh"), expect="too big"),
        c("vm", "new", "r", "--run", str(run / "missing.sh"), expect="not found"),
        c("vm", "new", "r", "--run", str(run / "a,b.sh"), expect="','"),
        c("vm", "new", "r", "--run", str(run / "ok.sh"), "--image", "nested-host", expect="appliance"),
        c("vm", "new", "r", "--run", str(run / "ok\x1b.sh"), expect="control"),
        c("vm", "new", "a", "--append", "x" * 2049, expect="too long"),
        c("vm", "new", "a", "--append", "quiet\ninit=/bin/sh", expect="control"),
        c("vm", "new", "a", "--append", "\x1b[2J", expect="control"),
        c("vm", "new", "a", "--append", "a\tb", expect="control"),
        c("vm", "new", "k", "--kernel", str(run / "missing"), expect="not found"),
        c("vm", "new", "k", "--kernel", str(run), expect="not a regular file"),
        c("vm", "new", "k", "--kernel", "/dev/zero", expect="not a regular file"),
        c("vm", "new", "k", "--kernel", str(run / "a,b.sh"), expect="','"),
        c("vm", "new", "k", "--kernel", str(run / "ok.sh"), "--image", "appliance", expect="exclude"),
        c("vm", "new", "k", "--initrd", str(run / "ok.sh"), expect="--kernel"),
        c("vm", "new", "k", "--kernel", str(run / "ok.sh"), "--initrd", "/dev/null", expect="not a regular file"),
        c("vm", "new", "k", "--kernel", str(run / "ok.sh"), "--initrd", str(run / "missing"), expect="not found"),
        c("vm", "new", "i", "--image", "windows", expect="image"),
        c("vm", "new", "i", "--image", "", expect="image"),
        c("vm", "new", "i", "--image", "APPLIANCE", expect="image"),
        c("vm", "new", "o", "--config-version", "3.1", expect="version"),
        c("vm", "new", "o", "--config-version", "11", expect="version"),
        c("vm", "new", "o", "--config-version", "", expect="version"),
        c("vm", "new", "o", "--config-version", "12.0", expect="version"),
        c("vm", "new", "o", "--config-version", "9.0", "--nested", expect="10.0"),
        c("vm", "new", "s", "--switch", "nope", expect="not found"),
    ]
    # -- issue 18: links, files read whole, Unicode digits, ISO and image formats, ps, vm log ----------
    cases += [
        c("vm", "new", "r", "--run", str(run / "link.sh"), expect="symbolic link"),
        c("vm", "new", "k", "--kernel", str(run / "link.sh"), expect="symbolic link"),
        c("vm", "new", "k", "--kernel", str(run / "ok.sh"), "--initrd", str(run / "link.sh"), expect="symbolic link"),
        c("vm", "new", "d", "--iso", str(run / "ok.sh"), "--no-ssh-key", expect="not an ISO image"),
        c("vm", "new", "d", "--iso", str(run / "link.sh"), "--no-ssh-key", expect="symbolic link"),
        c("vm", "new", "d", "--iso", "/dev/zero", "--no-ssh-key", expect="not a regular file"),
        c("vm", "new", "d", "--iso", str(run / "a,b.sh"), "--no-ssh-key", expect="','"),
        c("image", "import", str(run / "ok.sh"), "--name", "txt", expect="no image format"),
        c("image", "import", str(run / "link.sh"), "--name", "lnk", "--format", "raw", expect="symbolic link"),
        c("image", "import", "/dev/zero", "--name", "zero", "--format", "raw", expect="not a regular file"),
        c("ps", "/dev/zero", expect="larger than"),
        c("ps", "-c", "New-VM -Name psx -MemoryStartupBytes " + "9" * 400, expect="too large"),
        c("ps", "-c", "New-VM -Name psx -MemoryStartupBytes " + "9" * 30 + "GB", expect="too large"),
        c("ps", expect="not UTF-8", stdin=b"Get-VM \xff\xfe\n"),
        c("ps", "-c", "Get-VM\n" * 20000, expect="statements"),
        c("vm", "log", "off1", "--until", "", expect="--until"),
        c("vm", "log", "off1", "--until", "login:", expect="off"),
    ]
    for digits in ("\uff14", "\u0664", "\u0967", "\u00b2", "1\u0660"):
        cases.append(c("vm", "new", "u", "--vcpus", digits, expect="not an integer"))
        cases.append(c("vm", "set-processor", "off1", "--count", digits, expect="not an integer"))
        cases.append(c("vm", "stop", "run1", "--timeout", digits, expect="not a number"))
    # -- state rules ------------------------------------------------------------------------------
    cases += [
        c("vm", "new", "off1", expect="already exists"),
        c("vm", "start", "run1", expect="already running"),
        c("vm", "stop", "off1", expect="not running"),
        c("vm", "remove", "run1", expect="running"),
        c("vm", "set-processor", "run1", "--count", "2", expect="running"),
        c("vm", "set-processor", "run1", "--nested", "on", expect="running"),
        c("vm", "set-processor", "off1", expect="nothing to change"),
        c("vm", "set-memory", "off1", expect="nothing to change"),
        c("vm", "set-memory", "run1", "--dynamic", "on", expect="dynamic"),
        c("vm", "save", "off1", expect="not running"),
        c("vm", "exec", "off1", "true", expect="not running"),
        c("vm", "exec", "run1", "true", expect="agent"),
        c("vm", "console", "off1", expect="not running"),
        c("vm", "log", "nope", expect="not found"),
        c("vm", "log", "run1", "--tail", "-1", expect="negative"),
        c("vm", "log", "run1", "--tail", "x"),
        c("adapter", "add", "run1", "--switch", "sw", expect="running"),
        c("adapter", "remove", "run1", "net0", expect="running"),
        c("adapter", "add", "saved1", "--switch", "sw", expect="saved"),
        c("adapter", "remove", "saved1", "net0", expect="saved"),
        c("vm", "set-processor", "saved1", "--count", "2", expect="saved"),
        c("vm", "set-memory", "saved1", "--startup", "256M", expect="saved"),
        c("vm", "upgrade", "saved1", expect="saved"),
        c("vm", "save", "saved1", expect="already saved"),
        c("switch", "new", "sw", "--type", "private", expect="already exists"),
        c("switch", "remove", "sw", expect="in use"),
        c("nat", "new", "n2", "--switch", "sw", "--prefix", "10.77.0.0/24", expect="overlaps"),
        c("nat", "remove", "nope", expect="not found"),
        c("adapter", "remove", "off1", "net9", expect="no adapter"),
        c("adapter", "set", "off1", "--name", "net9", "--mac-spoofing", "on", expect="no adapter"),
        c("vm", "reset-disk", "run1", "--yes", expect="running"),
        c("vm", "reset-disk", "saved1", "--yes", expect="saved"),
        c("vm", "reset-disk", "off1", "--yes", expect="no disk"),
        c("vm", "reset-disk", "nope", "--yes", expect="not found"),
        c("vm", "reset-disk", "off1", expect="aborted"),  # asks first; no answer on a pipe
    ]
    # -- unknown things and usage -------------------------------------------------------------------
    cases += [
        c("vm", "show", "nope", expect="not found"),
        c("vm", "start", "nope", expect="not found"),
        c("vm", "remove", "nope", expect="not found"),
        c("switch", "show", "nope", expect="not found"),
        c("adapter", "list", "nope", expect="not found"),
        c("vm", "frobnicate"),
        c("frobnicate"),
        c("vm", "new"),
        c("vm", "new", "x", "--bogus"),
        c("vm", "list", "-o", "xml"),
        c("switch", "list", "-o", "yaml"),
        c("nat", "list", "-o", ""),
        c("vm", "show", "off1", "-o", "csv"),
        c("adapter", "set", "off1", "--mac-spoofing", "maybe"),
        c("image", "build", "windows"),
        c("vm", "exec", "run1"),
    ]
    # -- network input ----------------------------------------------------------------------------
    for mac in ("zz", "52:54:00:zz:00:01", "03:00:00:00:00:01", "00:00:00:00:00:00", "52:54:00:00:00",
                "52:54:00:00:00:01:02", "52:54:00:00:00:0\n1"):
        cases.append(c("adapter", "add", "off1", "--switch", "sw", "--mac", mac, expect="MAC"))
    for address in ("10.1.1.1", "10.1.1.300/24", "abc", "10.1.1.1/33", "10.1.1.1/24\n", ""):
        cases.append(c("switch", "set-ip", "sw", address))
    for prefix in ("10.1/xx", "10.78.0.1/24", "abc", "", "10.79.0.0/24"):
        cases.append(c("nat", "new", "n3", "--switch", "sw2", "--prefix", prefix))
    cases += [
        c("switch", "new", "x", "--type", "bogus", expect="--type"),
        c("switch", "new", "x", "--type", "external", expect="uplink"),
        c("switch", "new", "x", "--type", "internal", "--uplink", "eth1", expect="uplink"),
        c("adapter", "add", "off1", "--switch", "nope", expect="not found"),
    ]
    return cases


# -- snapshots ------------------------------------------------------------------------------------
def sh(*argv: str) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=True).stdout


COUNTERS = re.compile(r"counter packets \d+ bytes \d+")


def snapshot(home: Path, ns: str) -> dict[str, Any]:
    db = sqlite3.connect(f"file:{home / paths.DB_NAME}?mode=ro", uri=True)
    try:
        # The audit log records every refusal by design (service/audit.py): not part of "nothing changed"
        dump = [line for line in db.iterdump()
                if not line.startswith('INSERT INTO "audit"') and "'audit'" not in line]
    finally:
        db.close()
    tree = {}
    for top, dirs, names in os.walk(home):
        rel = Path(top).relative_to(home)
        if rel.parts[:1] in (("images",), ("locks",)):
            continue
        for name in (*dirs, *names):
            path = Path(top) / name
            st = path.lstat()
            growing = name.endswith(".log") or name.startswith("nestor.db")  # a guest's console; sqlite's WAL
            tree[str(rel / name)] = (st.st_mode, None if growing else st.st_size)
    links = sorted((link["ifname"], link.get("master")) for link in json.loads(sh("ip", "-n", ns, "-j", "link", "show")))
    ruleset = COUNTERS.sub("counter", sh("ip", "netns", "exec", ns, "nft", "list", "ruleset"))
    qemus = {d.name: process.live_pid(d) for d in sorted((home / "vms").iterdir())}
    return {"db": dump, "files": tree, "links": links, "nft": ruleset, "qemu": qemus}


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("corpus")
    run = tmp / "files"
    run.mkdir()
    (run / "ok.sh").write_text("echo hi\n")
    (run / "a,b.sh").write_text("echo hi\n")
    (run / "ok\x1b.sh").write_text("echo hi\n")
    with open(run / "big.sh", "wb") as f:
        f.truncate((16 << 20) + 1)
    os.mkfifo(run / "fifo")
    (run / "link.sh").symlink_to(run / "ok.sh")
    return tmp


@pytest.fixture(scope="module")
def corpus_home(tmp_path_factory: pytest.TempPathFactory, image_store: Path) -> Iterator[tuple[Path, str]]:
    """A switch (with an address and a NAT), an Off VM, a running VM and a saved VM, in a test netns."""
    ns = f"{NS_PREFIX}{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    home = tmp_path_factory.mktemp("corpus-home") / "home"
    home.mkdir()
    (home / "images").symlink_to(image_store)
    try:
        for args in (("switch", "new", "sw", "--type", "internal"), ("switch", "set-ip", "sw", "10.77.0.1/24"),
                     ("nat", "new", "n1", "--switch", "sw", "--prefix", "10.77.0.0/24"),
                     ("switch", "new", "sw2", "--type", "internal"), ("switch", "set-ip", "sw2", "10.78.0.1/24"),
                     ("vm", "new", "off1", "--memory", "128M", "--switch", "sw"),
                     ("vm", "new", "run1", "--memory", "128M", "--switch", "sw"),
                     ("vm", "new", "saved1", "--memory", "128M", "--switch", "sw"),
                     ("vm", "start", "run1"), ("vm", "start", "saved1"), ("vm", "save", "saved1")):
            nestor(home, *args, netns=ns)
        # `vm start` started the home's daemon (the serial-log cap) without waiting: let it settle
        # (pidfile, lock) before the first snapshot.
        assert daemon.ensure_running(paths.Home(home)) is not None
        yield home, ns
    finally:
        reap_home(home)
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=30)


def run_cli(argv: list[str], stdin: bytes | None = None) -> tuple[int, str, str]:
    runner = CliRunner()
    with runner.isolation(input=stdin) as (out, err, _):
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        return code, out.getvalue().decode(errors="replace"), err.getvalue().decode(errors="replace")


_FILES = Path("/nonexistent-corpus")  # replaced per module run: case ids must not depend on tmp paths


def _ids() -> list[Case]:
    return _cases(_FILES)


ALL = _ids()


def test_corpus_is_big_enough() -> None:
    assert len(ALL) >= 200, len(ALL)


@pytest.mark.parametrize("index", range(len(ALL)), ids=[f"{i:03d}-{case.id}" for i, case in enumerate(ALL)])
def test_refused(index: int, corpus_home: tuple[Path, str], files: Path) -> None:
    home, ns = corpus_home
    case = _cases(files)[index]
    before = snapshot(home, ns)
    if case.home is not None:
        argv = ["--home", case.home]
    else:
        argv = ["--home", str(home), "--netns", case.netns if case.netns is not None else ns]
    code, out, err = run_cli([*argv, *case.args], case.stdin)
    lines = err.strip("\n").split("\n")
    assert code != 0, f"accepted: {case.args!r}\n{out}{err}"
    assert "Traceback" not in out + err, err
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), err
    assert "internal error" not in lines[0], err
    if case.expect:
        assert case.expect in lines[0], (case.expect, err)
    if case.absent:
        assert not os.path.lexists(case.absent), f"{case.absent} was created"
    assert snapshot(home, ns) == before
