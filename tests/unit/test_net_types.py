"""The network use cases' typed results: their JSON round-trips, the facade returns them, and the
CLI's `-o json` keeps the shapes scripts parse (no root: nothing is made on the host)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nestor.api import openapi
from nestor.cli import net as cli_net
from nestor.errors import InvalidInput, NotFound
from nestor.net import netlink, uplink
from nestor.service import Service
from nestor.service.net_types import (
    AdapterInfo,
    AdapterSpec,
    GuardChange,
    GuardKind,
    Lease,
    LinkState,
    MovedRoute,
    MovedUplink,
    NatInfo,
    NatSpec,
    SwitchDetail,
    SwitchInfo,
    SwitchPort,
    SwitchRemoval,
    SwitchSpec,
    SwitchType,
)
from nestor.service.network import moved_uplink
from nestor.service.types import from_json, to_json

PORT = SwitchPort(vm="web", adapter="net0", mac="52:54:00:aa:bb:01", tap="nstab12c-1")
SAMPLES: list[Any] = [
    SwitchInfo(name="lan", type=SwitchType.INTERNAL, netns="nt-x", bridge="nsbab12c-1", address="10.50.0.1/24",
               uplink=None, adapters=1, nat="outside", state=LinkState.UP),
    SwitchInfo(name="ext", type=SwitchType.EXTERNAL, netns=None, bridge="nsbab12c-2", address=None, uplink="eth1",
               adapters=0, nat=None, state=LinkState.UNKNOWN),
    SwitchDetail(name="ext", type=SwitchType.EXTERNAL, netns=None, bridge="nsbab12c-2", address=None, uplink="eth1",
                 adapters=[PORT], nat=None, state=LinkState.MISSING, ports=["eth1", "nstab12c-1"],
                 host_addresses=["192.0.2.10/24"],
                 moved_from_uplink=MovedUplink(addresses=["192.0.2.10/24", "2001:db8::10/64"],
                                               routes=[MovedRoute("0.0.0.0/0", "192.0.2.1"),
                                                       MovedRoute("198.51.100.0/24", None)])),
    SwitchDetail(name="p", type=SwitchType.PRIVATE, netns="nt-x", bridge="nsbab12c-3", address=None, uplink=None,
                 adapters=[], nat=None, state=LinkState.DOWN, ports=None, host_addresses=None),
    SwitchRemoval(name="lan", nat="outside", adapters=[PORT]),
    SwitchRemoval(name="empty"),
    AdapterInfo(vm="web", name="net0", switch="lan", mac="52:54:00:aa:bb:01", mac_spoofing=False, router_guard=True,
                dhcp_guard=False, tap="nstab12c-1", netns="nt-x", dropped_frames=3, dropped_bytes=180,
                dropped={GuardKind.MAC: 2, GuardKind.DHCP: 1}),
    AdapterInfo(vm="web", name="net1", switch="p", mac="52:54:00:aa:bb:02", mac_spoofing=True, router_guard=True,
                dhcp_guard=True, tap="nstab12c-2", netns=None),
    NatInfo(name="outside", switch="lan", prefix="10.50.0.0/24", gateway="10.50.0.1", netns="nt-x", dhcp=True,
            dnsmasq_pid=4242, leases=[Lease(mac="52:54:00:aa:bb:01", ip="10.50.0.57", hostname="web")]),
    NatInfo(name="quiet", switch="lan2", prefix="10.51.0.0/24", gateway=None, netns=None, dhcp=False),
    SwitchSpec("lan", SwitchType.EXTERNAL, "eth1", move_addresses=True),
    AdapterSpec("lan", mac="52:54:00:aa:bb:01"),
    GuardChange(router_guard=False),
    NatSpec("outside", "lan", "10.50.0.0/24", dhcp=True),
]


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: type(v).__name__)
def test_json_round_trip(value: Any) -> None:
    wire = json.loads(json.dumps(to_json(value)))  # what the API sends and the client reads
    back = from_json(type(value), wire)
    assert back == value
    assert to_json(back) == wire  # and nothing in it is lost or renamed on the way back


def test_enums_and_addresses_on_the_wire() -> None:
    detail = to_json(SAMPLES[2])
    assert detail["type"] == "external" and detail["state"] == "missing"
    assert detail["moved_from_uplink"]["routes"][0] == {"destination": "0.0.0.0/0", "gateway": "192.0.2.1"}
    adapter = json.loads(json.dumps(to_json(SAMPLES[6])))
    assert adapter["dropped"] == {"mac": 2, "dhcp": 1}
    assert set(GuardKind) == {GuardKind(k) for k in ("mac", "arp", "nd", "vlan", "router", "dhcp")}
    assert GuardChange().empty() and not GuardChange(dhcp_guard=True).empty()


def test_moved_uplink_is_what_ip_showed() -> None:
    """The typed moved configuration says what the stored one describes (the CLI prints that)."""
    cfg = uplink.UplinkConfig(
        addresses=((2, "192.0.2.10", 24), (10, "2001:db8::10", 64)),
        routes=(netlink.Route(family=2, dst="", dst_len=0, gateway="192.0.2.1", priority=None),
                netlink.Route(family=2, dst="198.51.100.0", dst_len=24, gateway="192.0.2.254", priority=100),
                netlink.Route(family=10, dst="", dst_len=0, gateway="2001:db8::1", priority=None)),
    )
    moved = moved_uplink(uplink.loads(uplink.dumps(cfg)))
    assert moved.routes[0].destination == "0.0.0.0/0" and moved.routes[2].destination == "::/0"
    assert cli_net.moved_text(moved) == cfg.describe()


def test_cli_json_keeps_its_shapes() -> None:
    nat = cli_net.nat_json(SAMPLES[8])
    assert list(nat) == ["name", "switch", "prefix", "gateway", "netns", "dhcp", "dnsmasq", "leases", "host"]
    assert nat["dnsmasq"] == "pid 4242" and nat["leases"] == [{"mac": "52:54:00:aa:bb:01", "ip": "10.50.0.57",
                                                                "hostname": "web"}]
    assert cli_net.nat_json(SAMPLES[9])["dnsmasq"] is None
    assert cli_net.dnsmasq_text(NatInfo("n", "s", "10.0.0.0/24", None, None, dhcp=True)) == "not running"
    adapter = cli_net.adapter_json(SAMPLES[6])
    assert list(adapter) == ["name", "switch", "mac", "mac_spoofing", "router_guard", "dhcp_guard", "tap", "netns",
                             "dropped_frames", "dropped_bytes", "dropped"]
    shown = cli_net.switch_json(SAMPLES[2])
    assert shown["moved_from_uplink"] == "192.0.2.10/24, 2001:db8::10/64, route default via 192.0.2.1, " \
                                         "route 198.51.100.0/24"
    assert list(shown) == ["name", "type", "netns", "bridge", "address", "uplink", "adapters", "nat", "state", "ports",
                           "host_addresses", "moved_from_uplink", "default"]
    assert shown["adapters"] == [{"vm": "web", "adapter": "net0", "mac": "52:54:00:aa:bb:01", "tap": "nstab12c-1"}]


def test_the_facade_returns_typed_results(tmp_path: Path) -> None:
    """Rows made in the store (no bridge: the namespace does not exist) come back typed."""
    service = Service(tmp_path / "home", netns="nt-unit-none")
    net = service.core.network
    from nestor.model import VMConfig

    service.core.vms.add(VMConfig(name="web"))
    lan = net.store.add_switch("lan", "internal", "nt-unit-none", None)
    net.store.set_switch_address(lan.id, "10.50.0.1/24")
    net.store.add_switch("priv", "private", "nt-unit-none", None)
    nat = net.store.add_nat("outside", net.store.switch("lan"), "10.50.0.0/24", True)
    net.files.dnsmasq_leases(nat.id).parent.mkdir(parents=True, exist_ok=True)
    net.files.dnsmasq_leases(nat.id).write_text("1900000000 52:54:00:aa:bb:01 10.50.0.57 web 01:52:54:00:aa:bb:01\n")
    added = service.adapter_add("web", AdapterSpec("lan", mac="52:54:00:aa:bb:01"))
    assert isinstance(added, AdapterInfo) and added.vm == "web" and added.name == "net0" and added.dropped is None

    switches = service.switch_list()
    assert [s.name for s in switches] == ["lan", "priv"] and all(isinstance(s, SwitchInfo) for s in switches)
    assert switches[0].type is SwitchType.INTERNAL and switches[0].state is LinkState.MISSING
    assert switches[0].adapters == 1 and switches[0].nat == "outside" and switches[0].address == "10.50.0.1/24"
    detail = service.switch_show("lan")
    assert isinstance(detail, SwitchDetail) and detail.adapters == [SwitchPort("web", "net0", added.mac, added.tap)]
    assert detail.ports == [] and detail.moved_from_uplink is None
    assert service.adapter_list("web") == [added]
    nats = service.nat_list()
    assert nats == [NatInfo(name="outside", switch="lan", prefix="10.50.0.0/24", gateway="10.50.0.1",
                            netns="nt-unit-none", dhcp=True, dnsmasq_pid=None,
                            leases=[Lease("52:54:00:aa:bb:01", "10.50.0.57", "web")])]
    assert service.nat_show("outside") == nats[0]
    with pytest.raises(NotFound):
        service.nat_show("nope")
    with pytest.raises(InvalidInput, match="nothing to change"):
        service.adapter_set("web", None, GuardChange())
    with pytest.raises(NotFound):
        service.switch_show("nope")


def test_openapi_documents_the_network_answers() -> None:
    spec = openapi.document()
    paths, schemas = spec["paths"], spec["components"]["schemas"]

    def answer(path: str, method: str, status: str = "200") -> Any:
        return paths[path][method]["responses"][status]["content"]["application/json"]["schema"]

    assert answer("/v1/switches", "get")["items"]["$ref"].endswith("/SwitchInfo")
    assert answer("/v1/switches", "post", "201")["$ref"].endswith("/SwitchInfo")
    assert answer("/v1/switches/{name}", "get")["$ref"].endswith("/SwitchDetail")
    assert answer("/v1/switches/{name}", "delete")["$ref"].endswith("/SwitchRemoval")
    assert answer("/v1/vms/{vm}/adapters", "get")["items"]["$ref"].endswith("/AdapterInfo")
    assert answer("/v1/vms/{vm}/adapters/{name}", "patch")["$ref"].endswith("/AdapterInfo")
    assert answer("/v1/nats", "get")["items"]["$ref"].endswith("/NatInfo")
    assert answer("/v1/nats/{name}", "get")["$ref"].endswith("/NatInfo")
    assert set(schemas["SwitchType"]["enum"]) == {"internal", "private", "external"}
    assert set(schemas["LinkState"]["enum"]) == {"up", "down", "missing", "unknown"}
    assert {"leases", "dnsmasq_pid", "prefix"} <= set(schemas["NatInfo"]["properties"])


def test_client_gets_the_types_back_from_the_api(tmp_path: Path) -> None:
    """nestor.client over the app in-process: what the API sends decodes into the same types.
    The switch is a real bridge, in a network namespace this test makes and deletes."""
    import os
    import secrets
    import shutil
    import subprocess

    from fastapi.testclient import TestClient

    from nestor.api.app import Settings, create_app
    from nestor.client import Client
    from tests.helpers import LOCAL

    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("makes a bridge in its own network namespace: needs root and iproute2")
    netns = f"nt-ty{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", netns], check=True, timeout=30)
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "vmlinux").write_bytes(b"not a kernel")
    try:
        with TestClient(create_app(Settings(home, netns, files=tmp_path)), base_url=LOCAL) as api:
            assert api.post("/v1/vms", json={"name": "web", "kernel": str(tmp_path / "vmlinux")}).status_code == 201
            client = Client(transport=api._transport)
            made = client.switch_new(SwitchSpec("lan", SwitchType.INTERNAL))
            assert made.type is SwitchType.INTERNAL and made.state is LinkState.UP and made.adapters == 0
            assert client.switch_set_ip("lan", "10.77.0.1/24").address == "10.77.0.1/24"
            nat = client.nat_new(NatSpec("out", "lan", "10.77.0.0/24"))
            assert nat == NatInfo("out", "lan", "10.77.0.0/24", "10.77.0.1", netns, dhcp=False)
            assert client.nat_list() == [nat] and client.nat_show("out") == nat
            added = client.adapter_add("web", AdapterSpec("lan", mac="52:54:00:77:00:01"))
            assert added.vm == "web" and added.name == "net0" and not added.mac_spoofing
            changed = client.adapter_set("web", "net0", GuardChange(mac_spoofing=True, dhcp_guard=False))
            assert changed.mac_spoofing and not changed.dhcp_guard and changed.router_guard
            assert changed.dropped is not None and set(changed.dropped) == set(GuardKind)
            assert client.adapter_list("web") == [changed]
            detail = client.switch_show("lan")
            assert detail.nat == "out" and detail.host_addresses == ["10.77.0.1/24"]
            assert detail.adapters == [SwitchPort("web", "net0", "52:54:00:77:00:01", changed.tap)]
            assert client.switch_list() == [SwitchInfo("lan", SwitchType.INTERNAL, netns, made.bridge, "10.77.0.1/24",
                                                       None, 1, "out", LinkState.UP)]
            removed = client.switch_remove("lan", force=True)
            assert removed == SwitchRemoval("lan", nat="out", adapters=detail.adapters)
            assert client.switch_list() == [] and client.nat_list() == [] and client.adapter_list("web") == []
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False, timeout=30)
