"""dnsmasq's argv and lease parsing, without running it."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from nestor.net import dnsmasq


def config(tmp_path: Path) -> dnsmasq.DhcpConfig:
    return dnsmasq.DhcpConfig(
        bridge="nsbr1", prefix=ipaddress.IPv4Network("192.168.100.0/24"),
        gateway=ipaddress.IPv4Address("192.168.100.1"), pidfile=tmp_path / "d.pid",
        leasefile=tmp_path / "d.leases", logfile=tmp_path / "d.log", hostsfile=tmp_path / "d.hosts",
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
    """Issue 18: no L0 /etc/hosts through DNS; no client-chosen names ('wpad', another VM's);
    leases keyed on the guarded MAC, not on a client id a guest can copy."""
    argv = dnsmasq.argv(config(tmp_path))
    for expected in ("--no-hosts", "--dhcp-ignore-names", f"--dhcp-hostsfile={tmp_path / 'd.hosts'}",
                     "--dhcp-ignore-clid"):
        assert expected in argv


def test_hosts_file_names_each_mac_and_changes_only_when_needed(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    entries = [("52:54:00:00:00:02", "b"), ("52:54:00:00:00:01", "a")]
    assert dnsmasq.write_hosts(cfg, entries) is True
    assert cfg.hostsfile.read_text() == "52:54:00:00:00:01,a\n52:54:00:00:00:02,b\n"
    assert dnsmasq.write_hosts(cfg, reversed(entries)) is False  # same content: no reload
    assert dnsmasq.write_hosts(cfg, entries[:1]) is True
    assert dnsmasq.reload(cfg.pidfile) is False  # no dnsmasq runs for it


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
