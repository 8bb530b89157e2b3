"""Network use cases that must refuse before touching the host (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nestor import paths
from nestor.errors import Conflict, HostError, InvalidInput, NotFound, StateError
from nestor.model import VMConfig, VMState
from nestor.net import host
from nestor.service.network import Network
from nestor.state import db


@pytest.fixture
def net(tmp_path: Path) -> Network:
    home = paths.Home(tmp_path)
    conn = db.connect(home.db)
    db.VMRepo(conn).add(VMConfig(name="web"))
    states = {"web": VMState.OFF}
    network = Network(home, "nt-unit", conn, lambda c: states[c.name])
    network.states = states  # type: ignore[attr-defined]
    return network


def test_non_root_gets_a_clear_error(net: Network, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "has_net_admin", lambda: False)
    with pytest.raises(HostError) as err:
        net.switch_new("sw", "internal")
    assert "CAP_NET_ADMIN" in err.value.message and err.value.hint
    assert net.store.switches() == []


def test_missing_netns_hints_ip_netns_add(net: Network, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "has_net_admin", lambda: True)
    with pytest.raises(NotFound) as err:
        net.switch_new("sw", "private")
    assert "nt-unit" in err.value.message and err.value.hint == "ip netns add nt-unit"


@pytest.mark.parametrize(("args", "error"), [
    (("sw", "bogus"), InvalidInput),
    (("sw", "external"), InvalidInput),  # no --uplink
    (("sw", "internal", "eth1"), InvalidInput),  # --uplink on internal
    (("Bad Name", "internal"), InvalidInput),
    (("sw", "internal", None, True), InvalidInput),  # --move-addresses on internal
])
def test_switch_new_bad_input(net: Network, args: tuple[object, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        net.switch_new(*args)  # type: ignore[arg-type]


def test_adapters_only_while_off_and_macs_unique(net: Network) -> None:
    sw = net.store.add_switch("sw", "internal", "nt-unit", None)
    a = net.adapter_add("web", "sw")
    assert a.name == "net0" and a.mac.startswith("52:54:00:") and a.netns == "nt-unit" and a.tap == f"nst{net.tag}-{a.id}"
    with pytest.raises(Conflict):
        net.adapter_add("web", "sw", mac=a.mac)
    with pytest.raises(Conflict):
        net.adapter_add("web", "sw", name="net0")
    with pytest.raises(InvalidInput):
        net.adapter_add("web", "sw", mac="01:02:03:04:05:06")
    with pytest.raises(NotFound):
        net.adapter_add("web", "nope")
    with pytest.raises(NotFound):
        net.adapter_add("nope", "sw")
    b = net.adapter_add("web", "sw", mac="52:54:00:AA:00:01")
    assert b.name == "net1" and b.mac == "52:54:00:aa:00:01"
    net.states["web"] = VMState.RUNNING  # type: ignore[attr-defined]
    with pytest.raises(StateError) as err:
        net.adapter_add("web", "sw")
    assert "stop it first" in err.value.message
    with pytest.raises(StateError):
        net.adapter_remove("web", "net0")
    with pytest.raises(InvalidInput) as choose:
        net.adapter_set("web", None, True)  # two adapters: which one?
    assert "--name" in choose.value.message
    with pytest.raises(Conflict) as used:
        net.switch_remove("sw")
    assert "web/net0" in used.value.message and "--force" in (used.value.hint or "")
    assert len(net.store.adapters_on_switch(sw.id)) == 2


def test_nat_validation_before_any_host_change(net: Network) -> None:
    net.store.add_switch("priv", "private", "nt-unit", None)
    internal = net.store.add_switch("sw", "internal", "nt-unit", None)
    with pytest.raises(InvalidInput, match="internal switch"):
        net.nat_new("n", "priv", "10.0.0.0/24")
    with pytest.raises(InvalidInput, match="has no address") as err:
        net.nat_new("n", "sw", "10.0.0.0/24")
    assert err.value.hint == "nestor switch set-ip sw 10.0.0.1/24"
    net.store.set_switch_address(internal.id, "10.9.0.1/24")
    with pytest.raises(InvalidInput, match="outside the prefix"):
        net.nat_new("n", "sw", "10.0.0.0/24")
    with pytest.raises(InvalidInput, match="host bits"):
        net.nat_new("n", "sw", "10.9.0.1/24")
    with pytest.raises(NotFound):
        net.nat_new("n", "nope", "10.9.0.0/24")
    other = net.store.add_switch("sw2", "internal", "nt-unit", None)
    net.store.set_switch_address(other.id, "10.9.1.1/24")
    with pytest.raises(InvalidInput, match="larger than switch 'sw2' subnet 10.9.1.0/24"):
        net.nat_new("second", "sw2", "10.9.0.0/16")
    with pytest.raises(InvalidInput, match="half of all"):
        net.nat_new("second", "sw2", "0.0.0.0/1")
    net.store.set_switch_address(other.id, "10.9.1.1/16")
    net.store.add_nat("first", net.store.switch("sw"), "10.9.0.0/24", False)
    with pytest.raises(Conflict, match="overlaps nat 'first'"):
        net.nat_new("second", "sw2", "10.9.0.0/16")
    with pytest.raises(Conflict, match="already exists"):
        net.nat_new("first", "sw2", "10.9.1.0/24")
    assert [n.name for n in net.store.nats()] == ["first"]


def test_set_ip_refused_on_private(net: Network) -> None:
    net.store.add_switch("priv", "private", "nt-unit", None)
    with pytest.raises(InvalidInput, match="private"):
        net.switch_set_ip("priv", "10.0.0.1/24")


def test_attach_refuses_another_netns(net: Network, tmp_path: Path) -> None:
    net.store.add_switch("sw", "internal", "nt-other", None)
    net.adapter_add("web", "sw")
    with pytest.raises(StateError) as err:
        net.attach(net.vms.get("web"))
    assert "nt-other" in err.value.message and "--netns nt-other" in (err.value.hint or "")
    assert net.attach(VMConfig(name="none", id=999)) == ()


def test_has_net_admin_reads_cap_eff(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t0000000000001000\n")
    assert host.has_net_admin(status)
    status.write_text("Name:\tx\nCapEff:\t0000000000000000\n")
    assert not host.has_net_admin(status)


def test_adapter_guards_default_on_and_set_needs_something(net: Network) -> None:
    net.store.add_switch("sw", "internal", "nt-unit", None)
    a = net.adapter_add("web", "sw")
    assert a.router_guard and a.dhcp_guard and not a.mac_spoofing
    row = net.adapter_list("web")[0]
    assert row.router_guard is True and row.dhcp_guard is True and row.tap == f"nst{net.tag}-{a.id}"
    with pytest.raises(InvalidInput) as err:
        net.adapter_set("web", None)
    assert "nothing to change" in err.value.message and "--router-guard" in (err.value.hint or "")


def test_guard_migration_turns_the_guards_on_for_old_adapters(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "nestor.db")
    columns = {r["name"]: r["dflt_value"] for r in conn.execute("PRAGMA table_info(adapters)")}
    assert columns["router_guard"] == "1" and columns["dhcp_guard"] == "1"
    assert "moved" in {r["name"] for r in conn.execute("PRAGMA table_info(switches)")}


def test_two_homes_get_different_names(tmp_path: Path) -> None:
    nets = []
    for name in ("a", "b"):
        home = paths.Home(tmp_path / name)
        conn = db.connect(home.db)
        nets.append(Network(home, "nt-unit", conn))
        nets[-1].store.add_switch("sw", "internal", "nt-unit", None)
    first, second = (n.store.switch("sw").bridge for n in nets)
    assert first != second and first.endswith("-1") and second.endswith("-1")


def test_uplink_config_round_trips() -> None:
    from nestor.net import netlink, uplink

    cfg = uplink.UplinkConfig(
        addresses=((2, "192.0.2.10", 24), (10, "2001:db8::10", 64)),
        routes=(netlink.Route(family=2, dst="", dst_len=0, gateway="192.0.2.1", priority=None, device="eth0",
                              proto=4),),
    )
    back = uplink.loads(uplink.dumps(cfg))
    assert back.addresses == cfg.addresses and back.routes[0].gateway == "192.0.2.1" and back.routes[0].proto == 4
    assert back.routes[0].device is None  # the route goes back onto whatever device it is given
    assert "192.0.2.10/24" in cfg.describe() and "route default via 192.0.2.1" in cfg.describe()
