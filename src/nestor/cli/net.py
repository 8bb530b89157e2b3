"""switch, adapter and nat: thin commands over the service's network use cases (typed results
from service/net_types.py, shown here as tables and as the JSON of `-o json`)."""

from __future__ import annotations

from typing import Any

import click

from ..service.net_types import (
    AdapterInfo,
    AdapterSpec,
    GuardChange,
    MovedUplink,
    NatInfo,
    NatSpec,
    SwitchDetail,
    SwitchSpec,
    SwitchType,
)
from ..service.types import to_json
from .context import AT, Ctx, pass_ctx
from .output import OUTPUT, emit_json, fields, rows_out, table

SWITCH_TYPES = tuple(t.value for t in SwitchType)

ON_OFF = click.Choice(["on", "off"])


@click.group()
def switch() -> None:
    """Virtual switches: Linux bridges (internal, private, external)."""


@switch.command("new")
@click.argument("name")
@click.option("--type", "type_", type=click.Choice(SWITCH_TYPES), required=True,
              help="internal: the host has an address on it; private: VMs only; external: bridged to --uplink")
@click.option("--uplink", default=None, help="external: the interface to enslave")
@click.option("--move-addresses", is_flag=True,
              help="external: move the uplink's addresses and routes onto the switch (and back on removal)")
@AT
@pass_ctx
def switch_new(ctx: Ctx, name: str, type_: str, uplink: str | None, move_addresses: bool, at: str) -> None:
    """Create a switch (a bridge, in --netns if given)."""
    with ctx.level(at, local=True) as level:
        sw = level.switch_new(SwitchSpec(name, SwitchType(type_), uplink, move_addresses=move_addresses))
    click.echo(f"switch '{sw.name}' created ({sw.type}, bridge {sw.bridge})")


@switch.command("list")
@OUTPUT
@AT
@pass_ctx
def switch_list(ctx: Ctx, output: str, at: str) -> None:
    """All switches, with their observed state."""
    with ctx.level(at, local=True) as level:
        rows = to_json(level.switch_list())
    if output != "json":
        rows = [{**row, "default": "yes" if row["default"] else ""} for row in rows]
    rows_out(rows, output, ["name", "type", "state", "bridge", "address", "uplink", "netns", "adapters", "nat",
                            "default"], empty="no switches")


@switch.command("show")
@click.argument("name")
@OUTPUT
@AT
@pass_ctx
def switch_show(ctx: Ctx, name: str, output: str, at: str) -> None:
    """One switch in detail."""
    with ctx.level(at, local=True) as level:
        data = switch_json(level.switch_show(name))
    if output == "json":
        emit_json(data)
        return
    shown: dict[str, Any] = dict(data)
    shown["adapters"] = ", ".join(f"{a['vm']}/{a['adapter']} ({a['mac']})" for a in data["adapters"]) or None
    shown["ports"] = ", ".join(data["ports"]) if data["ports"] else None
    shown["host_addresses"] = ", ".join(data["host_addresses"]) if data["host_addresses"] else None
    fields(shown)


@switch.command("remove")
@click.argument("name")
@click.option("--force", is_flag=True,
              help="also remove the NAT and the adapters of VMs that are off (refused while an attached VM runs or is saved)")
@AT
@pass_ctx
def switch_remove(ctx: Ctx, name: str, force: bool, at: str) -> None:
    """Delete a switch."""
    with ctx.level(at, local=True) as level:
        result = level.switch_remove(name, force=force)
    removed = ([f"nat '{result.nat}'"] if result.nat else []) + [f"adapter {a.vm}/{a.adapter}" for a in result.adapters]
    also = f" (with {', '.join(removed)})" if removed else ""
    click.echo(f"switch '{name}' removed{also}")


@switch.command("set-ip")
@click.argument("name")
@click.argument("address")
@AT
@pass_ctx
def switch_set_ip(ctx: Ctx, name: str, address: str, at: str) -> None:
    """Give the host ADDR/PREFIX on the switch (seed: New-NetIPAddress)."""
    with ctx.level(at, local=True) as level:
        sw = level.switch_set_ip(name, address)
    click.echo(f"switch '{sw.name}' has address {sw.address}")


@click.group()
def adapter() -> None:
    """Network adapters of VMs (a tap on a switch)."""


@adapter.command("add")
@click.argument("vm")
@click.option("--switch", "switch_name", required=True, help="the switch to connect to")
@click.option("--mac", default=None, help="fixed MAC (default: a generated 52:54:00:xx:xx:xx)")
@click.option("--name", default=None, help="adapter name (default: net0, net1, ...)")
@pass_ctx
def adapter_add(ctx: Ctx, vm: str, switch_name: str, mac: str | None, name: str | None) -> None:
    """Add an adapter (only while the VM is off)."""
    with ctx.vm(vm, local=True) as (level, vm_name):
        a = level.adapter_add(vm_name, AdapterSpec(switch_name, mac=mac, name=name))
    click.echo(f"adapter '{a.name}' added to vm '{vm}' (switch {a.switch}, mac {a.mac})")


@adapter.command("list")
@click.argument("vm")
@OUTPUT
@pass_ctx
def adapter_list(ctx: Ctx, vm: str, output: str) -> None:
    """A VM's adapters, with the frames the MAC guard dropped."""
    with ctx.vm(vm, local=True) as (level, vm_name):
        rows = [adapter_json(a) for a in level.adapter_list(vm_name)]
    rows_out(rows, output, ["name", "switch", "mac", "mac_spoofing", "router_guard", "dhcp_guard", "tap", "netns",
                            "dropped_frames"], empty="no adapters")


@adapter.command("set")
@click.argument("vm")
@click.option("--name", default=None, help="which adapter (needed when the VM has several)")
@click.option("--mac-spoofing", type=ON_OFF, default=None,
              help="on: the VM may send with other MACs (seed: Set-VMNetworkAdapter -MacAddressSpoofing)")
@click.option("--router-guard", type=ON_OFF, default=None,
              help="on (default): drop router advertisements and redirects from the VM")
@click.option("--dhcp-guard", type=ON_OFF, default=None,
              help="on (default): drop DHCP server messages (offers, acks) from the VM")
@click.option("--ip", default=None, help="disk-image VMs: static ADDRESS/PREFIX, given to cloud-init")
@click.option("--gateway", default=None, help="with --ip: the default gateway")
@click.option("--dns", default=None, help="with --ip: DNS servers, comma-separated")
@click.option("--dhcp", is_flag=True, help="drop the static address (DHCP again)")
@pass_ctx
def adapter_set(ctx: Ctx, vm: str, name: str | None, mac_spoofing: str | None, router_guard: str | None,
                dhcp_guard: str | None, ip: str | None, gateway: str | None, dns: str | None, dhcp: bool) -> None:
    """Change MAC spoofing and the router/DHCP guards (at once, also while the VM runs), or a
    disk-image VM's static address for cloud-init (while it is off)."""
    from ..errors import InvalidInput

    def flag(value: str | None) -> bool | None:
        return None if value is None else value == "on"

    addressing = ip is not None or gateway is not None or dns is not None or dhcp
    guards = mac_spoofing is not None or router_guard is not None or dhcp_guard is not None
    if not guards and not addressing:
        raise InvalidInput("nothing to set", hint="give --mac-spoofing/--router-guard/--dhcp-guard on|off, "
                                                  "or --ip A/N [--gateway G] [--dns D]")
    if dhcp and (ip or gateway or dns):
        raise InvalidInput("--dhcp excludes --ip, --gateway and --dns", hint="give one of them")
    if addressing:
        r = ctx.local.adapter_set_address(ctx.only_here(vm, "--ip/--gateway/--dns/--dhcp"), name, ip, gateway, dns,
                                          clear=dhcp)
        click.echo(f"adapter '{r.adapter}' of vm '{vm}': " + (f"address {r.ip}" if r.ip else "DHCP")
                   + (f", gateway {r.gateway}" if r.gateway else "") + (f", dns {','.join(r.dns)}" if r.dns else ""))
    if guards:
        change = GuardChange(mac_spoofing=flag(mac_spoofing), router_guard=flag(router_guard), dhcp_guard=flag(dhcp_guard))
        with ctx.vm(vm, local=True) as (level, vm_name):
            a = level.adapter_set(vm_name, name, change)
        state = {True: "on", False: "off"}
        click.echo(f"adapter '{a.name}' of vm '{vm}': mac spoofing {state[a.mac_spoofing]}, "
                   f"router guard {state[a.router_guard]}, dhcp guard {state[a.dhcp_guard]}")


@adapter.command("remove")
@click.argument("vm")
@click.argument("name")
@pass_ctx
def adapter_remove(ctx: Ctx, vm: str, name: str) -> None:
    """Remove an adapter (only while the VM is off)."""
    with ctx.vm(vm, local=True) as (level, vm_name):
        level.adapter_remove(vm_name, name)
    click.echo(f"adapter '{name}' removed from vm '{vm}'")


@click.group()
def nat() -> None:
    """NAT for an internal switch: masquerade, forwarding, optional DHCP + DNS."""


@nat.command("new")
@click.argument("name")
@click.option("--switch", "switch_name", default=None, help="an internal switch with an address in the prefix")
@click.option("--host", "host", default=None,
              help="a libvirt host instead: a libvirt NAT network there (VMs join it with vm new --network NAME)")
@click.option("--prefix", required=True, help="the internal network, e.g. 192.168.100.0/24")
@click.option("--dhcp", is_flag=True, help="serve DHCP and DNS on the switch (dnsmasq)")
@OUTPUT
@AT
@pass_ctx
def nat_new(ctx: Ctx, name: str, switch_name: str | None, host: str | None, prefix: str, dhcp: bool,
            output: str, at: str) -> None:
    """Create a NAT (seed: New-NetNat -InternalIPInterfaceAddressPrefix)."""
    with ctx.level(at, local=True) as level:
        n = level.nat_new(NatSpec(name, switch_name, prefix, dhcp=dhcp, host=host))
    if output == "json":
        emit_json(nat_json(n))
        return
    where = f"libvirt network on host {n.host}" if n.host else f"on switch {n.switch}"
    click.echo(f"nat '{n.name}' created ({n.prefix} {where}{', dhcp' if n.dhcp else ''})")


@nat.command("list")
@OUTPUT
@AT
@pass_ctx
def nat_list(ctx: Ctx, output: str, at: str) -> None:
    """All NATs (this machine's and those on libvirt hosts), their dnsmasq and leases."""
    with ctx.level(at, local=True) as level:
        rows = [nat_json(n) for n in level.nat_list()]
    if output == "json":
        emit_json(rows)
        return
    shown = [{**r, "leases": len(r["leases"])} for r in rows]
    columns = ["name", "switch", "prefix", "gateway", "netns", "dhcp", "dnsmasq", "leases"]
    if any(r.get("host") for r in rows):
        columns.insert(1, "host")
    table(shown, columns, empty="no NATs")


@nat.command("remove")
@click.argument("name")
@AT
@pass_ctx
def nat_remove(ctx: Ctx, name: str, at: str) -> None:
    """Delete a NAT: its rules and its dnsmasq (on a libvirt host: its libvirt network)."""
    with ctx.level(at, local=True) as level:
        level.nat_remove(name)
    click.echo(f"nat '{name}' removed")


# -- the JSON of `-o json` (as it was before the results were typed: scripts parse it) ----------
def moved_text(moved: MovedUplink) -> str:
    """The moved uplink configuration in `ip` words: "192.0.2.10/24, route default via 192.0.2.1"."""
    routes = [f"route {'default' if r.destination.endswith('/0') else r.destination}"
              + (f" via {r.gateway}" if r.gateway else "") for r in moved.routes]
    return ", ".join([*moved.addresses, *routes])


def switch_json(detail: SwitchDetail) -> dict[str, Any]:
    data: dict[str, Any] = to_json(detail)
    data["moved_from_uplink"] = moved_text(detail.moved_from_uplink) if detail.moved_from_uplink else None
    return data


def adapter_json(adapter: AdapterInfo) -> dict[str, Any]:
    data: dict[str, Any] = to_json(adapter)
    del data["vm"]  # a list of one VM's adapters
    return data


def dnsmasq_text(nat: NatInfo) -> str | None:
    if not nat.dhcp:
        return None
    if nat.host:
        return "libvirt's"
    return f"pid {nat.dnsmasq_pid}" if nat.dnsmasq_pid else "not running"


def nat_json(nat: NatInfo) -> dict[str, Any]:
    data: dict[str, Any] = to_json(nat)
    leases = data.pop("leases")
    del data["dnsmasq_pid"]
    host, state, bridge = data.pop("host"), data.pop("state"), data.pop("bridge")
    data = {**data, "dnsmasq": dnsmasq_text(nat), "leases": leases, "host": host}
    if host is not None:  # a libvirt NAT network: its state and bridge as libvirt reports them
        data.update(libvirt_network=nat.name, state=state, bridge=bridge)
    return data
