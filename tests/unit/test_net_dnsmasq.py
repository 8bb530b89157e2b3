"""dnsmasq's argv and lease parsing, without running it."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from nestor.net import dnsmasq


def config(tmp_path: Path) -> dnsmasq.DhcpConfig:
    return dnsmasq.DhcpConfig(
        bridge="nsbr1", prefix=ipaddress.IPv4Network("192.168.100.0/24"),
        gateway=ipaddress.IPv4Address("192.168.100.1"), pidfile=tmp_path / "d.pid",
        leasefile=tmp_path / "d.leases", logfile=tmp_path / "d.log",
        hosts=(("52:54:00:00:00:02", "b"), ("52:54:00:00:00:01", "a")),
    )


def test_argv(tmp_path: Path) -> None:
    argv = dnsmasq.argv(config(tmp_path))
    assert argv[0] == "dnsmasq"
    for expected in (
        "--conf-file=/dev/null",
        f"--pid-file={tmp_path / 'd.pid'}",
        f"--dhcp-leasefile={tmp_path / 'd.leases'}",
        "--bind-interfaces",
        "--interface=nsbr1",
        "--except-interface=lo",
        "--dhcp-range=192.168.100.2,192.168.100.254,255.255.255.0,12h",
        "--dhcp-option=option:router,192.168.100.1",
        "--dhcp-option=option:dns-server,192.168.100.1",
        "--no-ping",
    ):
        assert expected in argv
    assert "--port=0" not in argv  # DNS stays on
    assert not any(a.startswith("--keep-in-foreground") for a in argv)  # it detaches


def test_dns_publishes_only_names_nestor_assigned(tmp_path: Path) -> None:
    """Issue 18: no L0 /etc/hosts through DNS; no client-chosen names ('wpad', another VM's),
    each adapter's MAC its VM's name; leases keyed on the guarded MAC, not a copyable client id."""
    argv = dnsmasq.argv(config(tmp_path))
    for expected in ("--no-hosts", "--dhcp-ignore-names", "--dhcp-ignore-clid"):
        assert expected in argv
    assert [a for a in argv if a.startswith("--dhcp-host")] == ["--dhcp-host=52:54:00:00:00:01,a",
                                                                "--dhcp-host=52:54:00:00:00:02,b"]
    assert dnsmasq.running_argv(1 << 30) is None


def test_stop_ignores_a_pid_that_is_not_ours(tmp_path: Path) -> None:
    pidfile = tmp_path / "d.pid"
    pidfile.write_text("1\n")  # init: its cmdline is not our dnsmasq
    assert dnsmasq.live_pid(pidfile) is None
    assert dnsmasq.stop(pidfile) is False and not pidfile.exists()


def test_leases(tmp_path: Path) -> None:
    leases = tmp_path / "l"
    leases.write_text("1700000000 52:54:00:12:34:56 192.168.100.7 l2 01:52:54:00:12:34:56\n")
    assert dnsmasq.leases(leases) == [{"mac": "52:54:00:12:34:56", "ip": "192.168.100.7", "hostname": "l2"}]
    assert dnsmasq.leases(tmp_path / "missing") == []
