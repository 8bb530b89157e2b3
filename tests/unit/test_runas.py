"""QEMU drops root to nestor's QEMU user: how the option is found, the argv, the errors (no QEMU run)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

import pytest

from nestor.engine import runas
from nestor.engine.argv import SANDBOX, SANDBOX_RUNAS, LaunchSpec, build
from nestor.errors import HostError
from nestor.host import facts
from nestor.images.debian import build_vm_argv
from nestor.net import netlink

# Excerpts of `qemu-system-x86_64 -help`: Debian 12's 7.2 and a 9.1 (where -runas is deprecated).
HELP_7_2 = """\
-chroot dir     chroot to dir just before starting the VM
-runas user     change to user id user just before starting the VM
                user can be numeric uid:gid instead
-sandbox on[,obsolete=allow|deny][,elevateprivileges=allow|deny|children]
"""
HELP_9_1 = """\
-runas user     change to user id user just before starting the VM
                user can be numeric uid:gid instead
-run-with [async-teardown=on|off][,chroot=dir][user=username|uid:gid]
                Set miscellaneous QEMU process lifecycle options:
"""
HELP_10 = """\
-run-with [async-teardown=on|off][,chroot=dir]
          [,exit-with-parent=on|off][,user=username|uid:gid]
                Set miscellaneous QEMU process lifecycle options:
"""
HELP_8_2 = """\
-run-with [async-teardown=on|off][,chroot=dir]
-runas user     change to user id user just before starting the VM
"""


@pytest.mark.parametrize(("text", "option"), [(HELP_7_2, "runas"), (HELP_9_1, "run-with"), (HELP_10, "run-with"),
                                              (HELP_8_2, "runas"),
                                              ("-sandbox on\n", None)])
def test_the_way_to_drop_root_is_read_from_qemu_help(text: str, option: str | None) -> None:
    assert facts.parse_user_option(text) == option


def spec(**kw: Any) -> LaunchSpec:
    return LaunchSpec(name="w", vm_dir=Path("/h/vms/1"), accel="tcg", cpu_model="max", vcpus=1, memory=256 << 20,
                      kernel=Path("/k"), **kw)


def test_argv_drops_root_with_runas_or_run_with_and_keeps_the_sandbox() -> None:
    old = build(spec(user=runas.QemuUser("nestor-qemu", 995, 993, "runas")))
    assert old[old.index("-runas") + 1] == "nestor-qemu" and "-run-with" not in old
    assert old[old.index("-sandbox") + 1] == SANDBOX_RUNAS
    assert "spawn=deny" in SANDBOX_RUNAS and "elevateprivileges=allow" in SANDBOX_RUNAS
    new = build(spec(user=runas.QemuUser("nestor-qemu", 995, 993, "run-with")))
    assert new[new.index("-run-with") + 1] == "user=nestor-qemu" and "-runas" not in new
    plain = build(spec())
    assert "-runas" not in plain and "-run-with" not in plain
    assert plain[plain.index("-sandbox") + 1] == SANDBOX


def test_build_vm_drops_root_too() -> None:
    user = runas.QemuUser("nestor-qemu", 995, 993)
    argv = build_vm_argv(Path("/d"), Path("/k"), Path("/i"), "u", Path("/l"), user)
    assert argv[argv.index("-runas") + 1] == "nestor-qemu"


def test_a_missing_user_is_one_error_line_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pwd, "getpwnam", lambda name: (_ for _ in ()).throw(KeyError(name)))
    with pytest.raises(HostError) as err:
        runas.lookup(runas.USER, "runas")
    assert "\n" not in err.value.message and "'nestor-qemu', does not exist" in err.value.message
    assert err.value.hint is not None and "scripts/setup" in err.value.hint


def test_root_and_bad_names_are_refused() -> None:
    with pytest.raises(HostError, match="uid 0"):
        runas.lookup("root", "runas")
    for bad in ("", "a,b", "a:b", "x\ny"):
        with pytest.raises(HostError):
            runas.lookup(bad, "runas")


def test_a_qemu_without_the_option_is_refused() -> None:
    with pytest.raises(HostError, match="cannot drop root"):
        runas.lookup("nobody", None)


def test_who_qemu_runs_as(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runas.USER_ENV, raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert runas.wanted() is None  # not root: QEMU runs as the invoking user
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert runas.wanted() == runas.USER
    monkeypatch.setenv(runas.USER_ENV, "qemu-other")
    assert runas.wanted() == "qemu-other"
    monkeypatch.setenv(runas.USER_ENV, "root")
    assert runas.wanted() is None  # documented opt-out, as libvirt's qemu.conf user = "root"


def test_the_probe_is_cached_per_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = tmp_path / "qemu"
    binary.write_text("#!/bin/sh\n")
    cache = tmp_path / "cache" / "qemu.json"
    calls: list[str] = []
    monkeypatch.setattr(facts, "qemu_user_option", lambda path, timeout=10.0: calls.append(path) or "runas")
    assert runas.user_option(str(binary), cache) == "runas"
    assert runas.user_option(str(binary), cache) == "runas"
    assert calls == [str(binary)]
    assert cache.stat().st_mode & 0o777 == 0o600
    binary.write_text("#!/bin/sh\n# another QEMU\n")  # a new binary is probed again
    assert runas.user_option(str(binary), cache) == "runas"
    assert len(calls) == 2


class FakeIPR:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def link(self, command: str, **kw: Any) -> list[Any]:
        self.calls.append((command, kw))
        return []

    def link_lookup(self, **kw: Any) -> list[int]:
        return [7]


def test_taps_are_roots_and_qemu_gets_their_descriptors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18: no TUNSETOWNER to the shared QEMU user; `-netdev tap,fd=N` instead of ifname=."""
    monkeypatch.setattr(netlink, "delete", lambda ipr, name: False)
    monkeypatch.setattr(netlink, "enslave", lambda ipr, name, bridge, netns: None)
    ipr = FakeIPR()
    netlink.fresh_tap(ipr, "tap0", "br0", None)
    add = next(kw for command, kw in ipr.calls if command == "add")
    assert add["kind"] == "tuntap" and "uid" not in add and "gid" not in add
    from nestor.engine import argv as qemu_argv

    nics = qemu_argv._nics(qemu_argv.LaunchSpec(name="v", vm_dir=Path("/v"), accel="tcg", cpu_model="max", vcpus=1,
                                                memory=1 << 28, kernel=None,
                                                nics=(qemu_argv.Nic("52:54:00:00:00:01", "tap0", fd=9),)))
    assert nics[1] == "tap,id=net0,fd=9"


def test_host_check_names_the_qemu_user(monkeypatch: pytest.MonkeyPatch) -> None:
    from nestor.service.facade import _qemu_user_check

    monkeypatch.setattr(runas, "wanted", lambda: "nestor-qemu-missing")
    (check,) = _qemu_user_check("runas")
    assert check.name == "qemu user" and not check.ok and "nestor-qemu-missing" in check.detail and check.fix
    monkeypatch.setattr(runas, "wanted", lambda: "nobody")
    (check,) = _qemu_user_check("run-with")
    assert check.ok and "-run-with user=nobody" in check.detail
    monkeypatch.setattr(runas, "wanted", lambda: None)
    assert _qemu_user_check("runas") == []
