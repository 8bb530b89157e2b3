"""Network use cases: switches (bridges), adapters (taps), the MAC guard (R8) and NAT (R9).

The VM use cases call ``attach`` / ``detach`` / ``forget`` around a VM's lifecycle; the facade
(service/facade.py) calls the ``switch_*``, ``adapter_*`` and ``nat_*`` methods. The listings
return the service's types (service/net_types.py); the changes return the store's rows, which
the facade turns into those types (``switch_info``, ``adapter_info``, ``nat_info``). Each use
case changes the host under a :class:`~nestor.net.revert.Reverter`, so a failure half-way
leaves nothing behind.

Where things live: a switch's bridge, its adapters' taps, the nft tables and dnsmasq all live in
the switch's network namespace (``--netns`` when it was made), recorded in the store. QEMU must
start in that same namespace to open its taps.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

from .. import paths
from ..engine.argv import Nic
from ..errors import Conflict, InvalidInput, NestorError, NotFound, StateError, error_context
from ..model import VMConfig, VMState, validate_name
from ..net import addresses, dnsmasq, forwarding, host, names, netlink, nft, sysctl
from ..net import uplink as uplinkcfg
from ..net.lock import net_lock
from ..net.revert import Reverter
from ..net.store import SWITCH_TYPES, Adapter, Nat, NetStore, Switch
from ..state import db
from ..state.lock import vm_lock
from .memory import is_saved, refuse_if_saved
from .net_types import (
    AdapterInfo,
    GuardKind,
    LinkState,
    MovedRoute,
    MovedUplink,
    NatInfo,
    SwitchDetail,
    SwitchInfo,
    SwitchPort,
    SwitchRemoval,
    SwitchType,
)

MAC_ATTEMPTS = 32

StateOf = Callable[[VMConfig], VMState]


def _status(observed: netlink.LinkState | None) -> LinkState:
    if observed is None:
        return LinkState.UNKNOWN  # could not look (no privileges)
    if not observed.exists:
        return LinkState.MISSING
    return LinkState.UP if observed.up else LinkState.DOWN


def moved_uplink(cfg: uplinkcfg.UplinkConfig) -> MovedUplink:
    """The stored moved configuration as the service shows it (CIDR strings)."""
    default = {netlink.AF_INET: "0.0.0.0/0"}
    return MovedUplink(
        addresses=[f"{address}/{prefixlen}" for _family, address, prefixlen in cfg.addresses],
        routes=[MovedRoute(destination=f"{r.dst}/{r.dst_len}" if r.dst else default.get(r.family, "::/0"),
                           gateway=r.gateway) for r in cfg.routes],
    )


def _port(a: Adapter) -> SwitchPort:
    return SwitchPort(vm=a.vm, adapter=a.name, mac=a.mac, tap=a.tap)


def _where(netns: str | None) -> str:
    return f"network namespace '{netns}'" if netns else "the root network namespace"


class Network:
    def __init__(self, home: paths.Home, netns: str | None, conn: sqlite3.Connection,
                 state_of: StateOf | None = None) -> None:
        self.home = home
        self.netns = netns
        self.conn = conn
        self.tag = names.home_tag(home.root)  # every host object carries this home's identity
        self.store = NetStore(conn, self.tag)
        self.vms = db.VMRepo(conn)
        self.files = names.NetFiles(home.root / "net")
        self._state_of = state_of

    # -- helpers ------------------------------------------------------------------------------
    def _lock(self) -> contextlib.AbstractContextManager[None]:
        return net_lock(self.files.lock)

    def _prepare(self, netns: str | None) -> None:
        """Before any host change: privileges, then the namespace."""
        host.require_net_admin()
        host.require_netns(netns)

    def _vm_state(self, config: VMConfig) -> VMState:
        return self._state_of(config) if self._state_of else VMState.OFF

    def _require_off(self, config: VMConfig, what: str) -> None:
        if self._vm_state(config) is not VMState.OFF:
            raise StateError(
                f"vm '{config.name}' is running: stop it first ({what} only while the VM is off)",
                hint=f"nestor vm stop {config.name}",
            )

    def _apply_guard(self, netns: str | None) -> None:
        """Render the namespace's whole guard table from the store (counters carried over)."""
        ports = [nft.GuardPort(tap=a.tap, mac=a.mac, mac_spoofing=a.mac_spoofing, label=f"{a.vm}/{a.name}",
                               router_guard=a.router_guard, dhcp_guard=a.dhcp_guard)
                 for a in self.store.adapters_in_netns(netns)]
        counters = nft.read_counters(netns, names.GUARD_FAMILY, names.guard_table(self.tag))
        nft.apply(netns, nft.render_guard(self.tag, ports, counters))

    def _apply_nat(self, netns: str | None, exclude: int | None = None) -> None:
        """Render this home's NAT table of the namespace; forwarding on while it has NATs, and
        back to what nestor found once no home has a NAT there any more."""
        nets = []
        for nat in self.store.nats_in_netns(netns):
            if nat.id != exclude:
                nets.append(nft.NatNet(name=nat.name, bridge=names.bridge_name(self.tag, nat.switch_id),
                                       prefix=ipaddress.IPv4Network(nat.prefix)))
        isolated = [sw.bridge for sw in self.store.switches() if sw.netns == netns and sw.type != "external"]
        if nets:
            forwarding.enable(netns)
        nft.apply(netns, nft.render_nat(self.tag, nets, isolated))
        if not nets and not any(family == names.NAT_FAMILY and name.startswith(names.NAT_BASE + "_")
                                for family, name in nft.tables(netns)):
            forwarding.restore(netns)

    def _reconcile_nats(self, netns: str | None) -> None:
        """Make the namespace's NATs real again (idempotent): the table, forwarding, each dnsmasq.

        A dead dnsmasq, a flushed ruleset or a reset ip_forward (a namespace or host restart)
        are all repaired here; called under the network lock by `vm start` and `nat` commands.
        """
        nats = self.store.nats_in_netns(netns)
        if not nats:
            return
        self._apply_nat(netns)
        for nat in nats:
            if not nat.dhcp:
                continue
            sw = self.store.switch(nat.switch)
            cfg = self._dhcp_config(nat, sw)
            pid = dnsmasq.live_pid(cfg.pidfile)
            if pid is not None and dnsmasq.running_argv(pid) != dnsmasq.argv(cfg):
                dnsmasq.stop(cfg.pidfile)  # another VM's name to publish (or one less): leases stay in the file
                pid = None
            if pid is None:
                with netlink.session(netns) as ipr:
                    self._realize_switch(ipr, sw)
                dnsmasq.start(netns, cfg)

    def _reconcile_all_nats(self) -> None:
        """Before a `nat` command: every namespace we can reach and change (quietly otherwise)."""
        if not host.has_net_admin():
            return
        with self._lock():
            for netns in {nat.netns for nat in self.store.nats()}:
                try:
                    host.require_netns(netns)
                except NotFound:
                    continue  # the namespace is gone; `nat remove` still cleans up the rows
                self._reconcile_nats(netns)

    @contextlib.contextmanager
    def _session_if_present(self, netns: str | None) -> Iterator[Any | None]:
        """A netlink session, or None when the namespace is gone (and took our links with it)."""
        try:
            host.require_netns(netns)
        except NotFound:
            yield None
            return
        with netlink.session(netns) as ipr:
            yield ipr

    def _realize_switch(self, ipr: Any, sw: Switch) -> bool:
        """Make the switch's bridge exist as stored (idempotent). Returns whether it was created.

        Its IPv6 settings are (re)asserted before it comes up: no RA, no autoconf, and no IPv6
        at all on a private switch.
        """
        settings = sysctl.bridge_ipv6(sw.bridge, private=sw.type == "private")
        created = netlink.ensure_bridge(ipr, sw.bridge, addresses.random_mac(addresses.BRIDGE_OUI),
                                        before_up=lambda: sysctl.write(sw.netns, settings))
        if sw.uplink:
            netlink.enslave(ipr, sw.uplink, sw.bridge, sw.netns)
        if sw.address:
            netlink.set_address(ipr, sw.bridge, ipaddress.IPv4Interface(sw.address), None, sw.netns)
        if sw.moved:
            uplinkcfg.put(ipr, netlink.require(ipr, sw.bridge, sw.netns), uplinkcfg.loads(sw.moved))
        return created

    # -- switches -----------------------------------------------------------------------------
    def switch_new(self, name: str, type_: str, uplink: str | None = None, move_addresses: bool = False) -> Switch:
        validate_name(name, "switch")
        if type_ not in SWITCH_TYPES:
            raise InvalidInput(f"unknown switch type '{type_}'", hint=f"use one of {', '.join(SWITCH_TYPES)}")
        if type_ == "external" and not uplink:
            raise InvalidInput("an external switch needs --uplink IFACE", hint="e.g. --uplink eth1")
        if type_ != "external" and uplink:
            raise InvalidInput(f"--uplink is only for external switches, not {type_}", hint="drop --uplink")
        if move_addresses and type_ != "external":
            raise InvalidInput(f"--move-addresses is only for external switches, not {type_}",
                               hint="drop --move-addresses")
        if self.store.find_switch(name):
            raise Conflict(f"switch '{name}' already exists", hint="choose another name (nestor switch list)")
        self._prepare(self.netns)
        with error_context(switch=name), self._lock(), Reverter() as revert:
            sw = self.store.add_switch(name, type_, self.netns, uplink)
            revert.add(lambda: self.store.remove_switch(sw.id))
            with netlink.session(self.netns) as ipr:
                if netlink.index(ipr, sw.bridge) is not None:
                    raise Conflict(f"interface '{sw.bridge}' already exists in {_where(self.netns)}",
                                   hint="another nestor home uses this namespace; use a namespace per home")
                if uplink:
                    up = netlink.state(ipr, uplink)
                    if not up.exists:
                        netlink.require(ipr, uplink, self.netns)
                    if up.master:
                        raise Conflict(f"uplink '{uplink}' is already a port of '{up.master}'",
                                       hint="choose an interface that is not enslaved")
                    if uplink == "lo":
                        raise InvalidInput("the loopback interface cannot be an uplink", hint="e.g. --uplink eth1")
                    sw = self._take_uplink(ipr, sw, move_addresses, revert)
                revert.add(lambda: self._delete_bridge(sw))  # before: making it may fail half-way
                self._realize_switch(ipr, sw)
            if self.store.nats_in_netns(self.netns):
                self._apply_nat(self.netns)  # the new switch joins the forward chain's drop
            revert.success()
        return sw

    def _take_uplink(self, ipr: Any, sw: Switch, move: bool, revert: Reverter) -> Switch:
        """An uplink the host uses (addresses, default route) is refused, or with ``move`` its
        configuration leaves it here and is put on the bridge by ``_realize_switch``."""
        assert sw.uplink is not None
        idx = netlink.require(ipr, sw.uplink, sw.netns)
        cfg = uplinkcfg.read(ipr, idx)
        default = uplinkcfg.carries_default_route(ipr, idx)
        if cfg.empty and not default:
            return sw
        if not move:
            what = cfg.describe() or "the default route"
            raise Conflict(f"uplink '{sw.uplink}' carries the host's configuration ({what}): as a bridge port "
                           "it would cut the host off",
                           hint="add --move-addresses to move it onto the switch (and back on removal), "
                                "or choose an unused interface")
        self.store.set_switch_moved(sw.id, uplinkcfg.dumps(cfg))
        uplinkcfg.take(ipr, idx, cfg)
        revert.add(functools.partial(self._give_back, sw.netns, sw.uplink, cfg))
        return self.store.switch(sw.name)

    def _give_back(self, netns: str | None, uplink: str, cfg: uplinkcfg.UplinkConfig) -> None:
        """The moved configuration back onto the uplink (after it left the bridge)."""
        with self._session_if_present(netns) as ipr:
            if ipr is not None:
                idx = netlink.index(ipr, uplink)
                if idx is not None:
                    netlink.release(ipr, uplink)
                    uplinkcfg.put(ipr, idx, cfg)

    def _delete_bridge(self, sw: Switch) -> None:
        with self._session_if_present(sw.netns) as ipr:
            if ipr is not None:
                if sw.uplink:
                    netlink.release(ipr, sw.uplink)
                netlink.delete(ipr, sw.bridge)
        if sw.uplink and sw.moved:
            self._give_back(sw.netns, sw.uplink, uplinkcfg.loads(sw.moved))

    def _observe_switch(self, sw: Switch) -> netlink.LinkState | None:
        try:
            with self._session_if_present(sw.netns) as ipr:
                return netlink.state(ipr, sw.bridge) if ipr is not None else netlink.LinkState(exists=False)
        except NestorError:
            return None  # cannot look (no privileges): unknown

    def switch_info(self, sw: Switch) -> SwitchInfo:
        """A stored switch with its bridge observed now."""
        return self._switch_info(sw, self._observe_switch(sw))

    def _switch_info(self, sw: Switch, observed: netlink.LinkState | None) -> SwitchInfo:
        nat = self.store.nat_of_switch(sw.id)
        return SwitchInfo(name=sw.name, type=SwitchType(sw.type), netns=sw.netns, bridge=sw.bridge,
                          address=sw.address, uplink=sw.uplink, adapters=len(self.store.adapters_on_switch(sw.id)),
                          nat=nat.name if nat else None, state=_status(observed))

    def switch_list(self) -> list[SwitchInfo]:
        return [self.switch_info(sw) for sw in self.store.switches()]

    def switch_show(self, name: str) -> SwitchDetail:
        sw = self.store.switch(name)
        observed = self._observe_switch(sw)
        info = self._switch_info(sw, observed)
        return SwitchDetail(
            name=info.name, type=info.type, netns=info.netns, bridge=info.bridge, address=info.address,
            uplink=info.uplink, adapters=[_port(a) for a in self.store.adapters_on_switch(sw.id)], nat=info.nat,
            state=info.state, ports=list(observed.ports) if observed else None,
            host_addresses=list(observed.addresses) if observed else None,
            moved_from_uplink=moved_uplink(uplinkcfg.loads(sw.moved)) if sw.moved else None,
        )

    def switch_set_ip(self, name: str, address: str) -> Switch:
        sw = self.store.switch(name)
        iface = addresses.parse_interface(address)
        if sw.type == "private":
            raise InvalidInput(f"switch '{name}' is private: the host has no address on it",
                               hint="use an internal switch (nestor switch new NAME --type internal)")
        nat = self.store.nat_of_switch(sw.id)
        if nat and iface.ip not in ipaddress.IPv4Network(nat.prefix):
            raise InvalidInput(f"address {iface} is outside nat '{nat.name}' prefix {nat.prefix}",
                               hint=f"use an address in {nat.prefix}")
        addresses.check_host_address(iface)
        self._prepare(sw.netns)
        old = ipaddress.IPv4Interface(sw.address) if sw.address else None
        with error_context(switch=name), self._lock(), netlink.session(sw.netns) as ipr:
            netlink.require(ipr, sw.bridge, sw.netns)
            addresses.check_no_clash(iface, self._taken_networks(ipr, sw, old), _where(sw.netns))
            netlink.set_address(ipr, sw.bridge, iface, old, sw.netns)
            self.store.set_switch_address(sw.id, str(iface))
        return self.store.switch(name)

    def _taken_networks(self, ipr: Any, sw: Switch,
                        old: ipaddress.IPv4Interface | None) -> list[tuple[str, ipaddress.IPv4Network]]:
        """The namespace's IPv4 routes and addresses (but the switch's own current address and
        default routes, which overlap everything), each with how to name it in an error."""
        own = old.network if old else None
        taken = []
        for link in ipr.get_links():
            idx, ifname = int(link["index"]), str(link.get("ifname"))
            for family, address, prefixlen in netlink.addresses_of(ipr, idx):
                iface = ipaddress.ip_interface(f"{address}/{prefixlen}")
                if family != netlink.AF_INET or not isinstance(iface, ipaddress.IPv4Interface):
                    continue
                if ifname == sw.bridge and iface == old:
                    continue
                taken.append((f"address {iface} on {ifname}", iface.network))
        for route in netlink.routes_of(ipr):
            if route.family != netlink.AF_INET or route.dst_len == 0:
                continue
            net = ipaddress.IPv4Network(f"{route.dst}/{route.dst_len}", strict=False)
            if route.device == sw.bridge and net == own:
                continue
            taken.append((route.describe(), net))
        return taken

    def switch_remove(self, name: str, force: bool = False) -> SwitchRemoval:
        """Delete the switch; with ``force`` also its NAT and the adapters of VMs that are off.
        Returns what else went.

        A running (or paused) VM's tap is never deleted under it, and a saved VM needs its
        adapters to resume: while any VM attached to the switch is in either state the removal
        is refused, naming them, with or without ``force`` (docs/decisions.md, 2026-11-27).
        """
        sw = self.store.switch(name)
        users = self.store.adapters_on_switch(sw.id)
        nat = self.store.nat_of_switch(sw.id)
        if (users or nat) and not force:
            parts = []
            if users:
                parts.append(f"{len(users)} adapter(s): " + ", ".join(f"{a.vm}/{a.name}" for a in users))
            if nat:
                parts.append(f"nat '{nat.name}'")
            raise Conflict(f"switch '{name}' is in use by " + " and ".join(parts),
                           hint=f"remove those first, or nestor switch remove {name} --force "
                                "(removes them; refused while an attached VM runs or is saved)")
        host.require_net_admin()
        with contextlib.ExitStack() as locks:
            # The attached VMs' locks (in id order, before the network lock, as `vm start` takes
            # them): none of them starts, stops or saves while we look and remove.
            locked = set()
            for vm_id in sorted({a.vm_id for a in users}):
                vm_name = next(a.vm for a in users if a.vm_id == vm_id)
                locks.enter_context(vm_lock(paths.VMFiles(self.home.vm_dir(vm_id)).lock, vm_name))
                locked.add(vm_id)
            users = self.store.adapters_on_switch(sw.id)  # again, under the locks
            if {a.vm_id for a in users} - locked:
                raise Conflict(f"switch '{name}': an adapter was added to it meanwhile", hint="run the command again")
            self._refuse_live_users(name, users)
            nat = self.store.nat_of_switch(sw.id)
            if nat:
                self.nat_remove(nat.name)
            with error_context(switch=name), self._lock():
                for adapter in users:
                    self._delete_tap(adapter)
                    self.store.remove_adapter(adapter.id)
                if users:
                    self._rerender_guard(sw.netns)
                self._delete_bridge(sw)
                self.store.remove_switch(sw.id)
                if self.store.nats_in_netns(sw.netns):
                    self._rerender_nat(sw.netns)
        return SwitchRemoval(name=sw.name, nat=nat.name if nat else None, adapters=[_port(a) for a in users])

    def _refuse_live_users(self, switch: str, users: list[Adapter]) -> None:
        """StateError naming every attached VM that runs, is paused or is saved."""
        busy: dict[str, str] = {}
        for adapter in users:
            if adapter.vm in busy:
                continue
            config = self.vms.get(adapter.vm)
            state = self._vm_state(config)
            if state is not VMState.OFF:
                busy[adapter.vm] = state.value
            elif is_saved(paths.VMFiles(self.home.vm_dir(config.id))):
                busy[adapter.vm] = "saved"
        if not busy:
            return
        named = ", ".join(f"vm '{vm}' ({state})" for vm, state in busy.items())
        first = next(iter(busy))
        nic = next(a.name for a in users if a.vm == first)
        stop = f"nestor vm stop {first}" + (" --turn-off (discards the saved state)" if busy[first] == "saved" else "")
        raise StateError(
            f"switch '{switch}' is used by {named}: a running VM's adapter is never removed under it, "
            "and a saved VM needs its adapters to resume",
            hint=f"stop it first ({stop}), or once it is off remove its adapter (nestor adapter remove {first} {nic}); "
                 f"then nestor switch remove {switch} --force",
        )

    # -- adapters ------------------------------------------------------------------------------
    def _new_mac(self) -> str:
        for _ in range(MAC_ATTEMPTS):
            mac = addresses.random_mac()
            if not self.store.mac_in_use(mac):
                return mac
        raise Conflict("could not find an unused MAC address", hint="give one with --mac")

    def adapter_add(self, vm: str, switch: str, mac: str | None = None, name: str | None = None) -> Adapter:
        config = self.vms.get(validate_name(vm))
        sw = self.store.switch(switch)
        mac = addresses.validate_mac(mac) if mac else self._new_mac()
        if self.store.mac_in_use(mac):
            raise Conflict(f"MAC address {mac} is already used by another adapter", hint="omit --mac to get a generated one")
        taken = {a.name for a in self.store.adapters_of_vm(config.id)}
        if name is None:
            name = next(f"net{i}" for i in range(len(taken) + 1) if f"net{i}" not in taken)
        validate_name(name, "adapter")
        with error_context(vm=vm), vm_lock(paths.VMFiles(self.home.vm_dir(config.id)).lock, vm):
            self._require_off(config, "adapters can be added")
            refuse_if_saved(paths.VMFiles(self.home.vm_dir(config.id)), vm, "its adapters")  # a restore needs the same NICs
            return self.store.add_adapter(config.id, name, sw, mac)

    def _adapter(self, config: VMConfig, name: str | None) -> Adapter:
        adapters = self.store.adapters_of_vm(config.id)
        if name is None:
            if len(adapters) == 1:
                return adapters[0]
            if not adapters:
                raise NotFound(f"vm '{config.name}' has no network adapter",
                               hint=f"nestor adapter add {config.name} --switch SW")
            raise InvalidInput(f"vm '{config.name}' has {len(adapters)} adapters: say which with --name",
                               hint="adapters: " + ", ".join(a.name for a in adapters))
        for adapter in adapters:
            if adapter.name == name:
                return adapter
        raise NotFound(f"vm '{config.name}' has no adapter '{name}'", hint=f"nestor adapter list {config.name}")

    def adapter_list(self, vm: str) -> list[AdapterInfo]:
        config = self.vms.get(validate_name(vm))
        return self._adapter_infos(self.store.adapters_of_vm(config.id))

    def adapter_info(self, adapter: Adapter) -> AdapterInfo:
        """A stored adapter with its guard's counters read now."""
        return self._adapter_infos([adapter])[0]

    def _adapter_infos(self, adapters: list[Adapter]) -> list[AdapterInfo]:
        counters: dict[str | None, dict[str, tuple[int, int]]] = {}
        infos = []
        for a in adapters:
            if a.netns not in counters:
                try:
                    host.require_netns(a.netns)
                    counters[a.netns] = nft.read_counters(a.netns, names.GUARD_FAMILY, names.guard_table(self.tag))
                except NestorError:
                    counters[a.netns] = {}
            found = {GuardKind(kind): counters[a.netns].get(names.counter_name(kind, a.tap))
                     for kind in names.GUARD_KINDS}
            known = [c for c in found.values() if c is not None]
            infos.append(AdapterInfo(
                vm=a.vm, name=a.name, switch=a.switch, mac=a.mac, mac_spoofing=a.mac_spoofing,
                router_guard=a.router_guard, dhcp_guard=a.dhcp_guard, tap=a.tap, netns=a.netns,
                dropped_frames=sum(c[0] for c in known) if known else None,
                dropped_bytes=sum(c[1] for c in known) if known else None,
                dropped={kind: c[0] for kind, c in found.items() if c is not None} or None,
            ))
        return infos

    def adapter_set(self, vm: str, name: str | None, mac_spoofing: bool | None = None,
                    router_guard: bool | None = None, dhcp_guard: bool | None = None) -> Adapter:
        """Seed R8 and the router/DHCP guards: allowed while the VM runs, and applied at once
        (the guard is re-rendered); what is not given stays as it is."""
        if mac_spoofing is None and router_guard is None and dhcp_guard is None:
            raise InvalidInput("nothing to change",
                               hint="give --mac-spoofing, --router-guard and/or --dhcp-guard (on|off)")
        config = self.vms.get(validate_name(vm))
        self._adapter(config, name)  # bad input first, before privileges
        host.require_net_admin()
        with error_context(vm=vm), self._lock():
            adapter = self._adapter(config, name)  # read again under the lock: write only what changed
            self.store.set_guards(
                adapter.id,
                adapter.mac_spoofing if mac_spoofing is None else mac_spoofing,
                adapter.router_guard if router_guard is None else router_guard,
                adapter.dhcp_guard if dhcp_guard is None else dhcp_guard,
            )
            try:
                self._rerender_guard(adapter.netns)
            except BaseException:
                self.store.set_guards(adapter.id, adapter.mac_spoofing, adapter.router_guard, adapter.dhcp_guard)
                raise
        return self._adapter(config, adapter.name)

    def adapter_remove(self, vm: str, name: str) -> None:
        config = self.vms.get(validate_name(vm))
        adapter = self._adapter(config, name)
        with error_context(vm=vm), vm_lock(paths.VMFiles(self.home.vm_dir(config.id)).lock, vm):
            self._require_off(config, "adapters can be removed")
            refuse_if_saved(paths.VMFiles(self.home.vm_dir(config.id)), vm, "its adapters")  # a restore needs the same NICs
            with self._lock():
                self._delete_tap(adapter)
                self.store.remove_adapter(adapter.id)
                self._rerender_guard(adapter.netns)

    def _rerender_guard(self, netns: str | None) -> None:
        try:
            host.require_netns(netns)
        except NotFound:
            return
        host.require_net_admin()
        self._apply_guard(netns)

    def _rerender_nat(self, netns: str | None) -> None:
        try:
            host.require_netns(netns)
        except NotFound:
            return
        self._apply_nat(netns)

    def _delete_tap(self, adapter: Adapter) -> None:
        with self._session_if_present(adapter.netns) as ipr:
            if ipr is not None:
                netlink.delete(ipr, adapter.tap)

    # -- the VM lifecycle hooks ------------------------------------------------------------------
    def attach(self, config: VMConfig) -> tuple[Nic, ...]:
        """Before QEMU starts: fresh taps on their bridges, the guard applied; the VM's NICs.

        Idempotent: a tap left by a killed QEMU is replaced, a missing bridge is made again.
        The taps are root's (no TUNSETOWNER): `vm start` opens each one and hands QEMU the
        descriptor (net/tapfd.py), as libvirt does, so the shared QEMU user can open no tap.
        """
        adapters = self.store.adapters_of_vm(config.id)
        if not adapters:
            return ()
        for a in adapters:
            if a.netns != self.netns:
                raise StateError(
                    f"vm '{config.name}' adapter '{a.name}' is on switch '{a.switch}' in {_where(a.netns)}, "
                    f"but QEMU would start in {_where(self.netns)}",
                    hint=f"nestor --netns {a.netns} vm start {config.name}" if a.netns
                    else f"nestor vm start {config.name} (without --netns)",
                )
        self._prepare(self.netns)
        with self._lock(), netlink.session(self.netns) as ipr, Reverter() as revert:
            for a in adapters:
                sw = self.store.switch(a.switch)
                self._realize_switch(ipr, sw)
                settings = sysctl.tap_ipv6(a.tap)
                netlink.fresh_tap(ipr, a.tap, sw.bridge, self.netns,
                                  before_up=functools.partial(sysctl.write, self.netns, settings))
                revert.add(functools.partial(netlink.delete, ipr, a.tap))
            self._apply_guard(self.netns)
            if any(self.store.nat_of_switch(a.switch_id) for a in adapters):
                self._reconcile_nats(self.netns)  # a dead dnsmasq or a flushed table comes back
            revert.success()
        return tuple(Nic(mac=a.mac, tap=a.tap) for a in adapters)

    def detach(self, config: VMConfig) -> None:
        """After QEMU stopped: delete the VM's taps (where they were made, whatever --netns says).

        The guard keeps the adapters' rules and counters: they match no interface until the
        next start, and `adapter list` still shows what was dropped.
        """
        adapters = self.store.adapters_of_vm(config.id)
        if not adapters:
            return
        with self._lock():
            for a in adapters:
                self._delete_tap(a)

    def forget(self, config: VMConfig) -> None:
        """The VM is being removed: its taps, its adapters and their guard rules go."""
        adapters = self.store.adapters_of_vm(config.id)
        if not adapters:
            return
        self.detach(config)
        with self._lock():
            for a in adapters:
                self.store.remove_adapter(a.id)
            for netns in {a.netns for a in adapters}:
                self._rerender_guard(netns)

    # -- NAT -----------------------------------------------------------------------------------
    def nat_new(self, name: str, switch: str, prefix: str, dhcp: bool = False) -> Nat:
        validate_name(name, "nat")
        net = addresses.parse_prefix(prefix)
        if self.store.find_nat(name):
            raise Conflict(f"nat '{name}' already exists", hint="choose another name (nestor nat list)")
        sw = self.store.switch(switch)
        if sw.type != "internal":
            raise InvalidInput(f"switch '{switch}' is {sw.type}: a NAT needs an internal switch",
                               hint="nestor switch new NAME --type internal")
        first = f"{next(net.hosts())}/{net.prefixlen}"
        if not sw.address:
            raise InvalidInput(f"switch '{switch}' has no address: the VMs need it as their gateway",
                               hint=f"nestor switch set-ip {switch} {first}")
        gateway = ipaddress.IPv4Interface(sw.address)
        if gateway.ip not in net:
            raise InvalidInput(f"switch '{switch}' address {sw.address} is outside the prefix {net}",
                               hint=f"nestor switch set-ip {switch} {first}, or a prefix that contains it")
        addresses.check_nat_in_switch(net, switch, gateway)
        addresses.check_no_overlap(name, net, ((n.name, ipaddress.IPv4Network(n.prefix)) for n in self.store.nats()))
        if dhcp:
            addresses.dhcp_range(net, gateway.ip)  # a range must exist
        self._prepare(sw.netns)
        self._reconcile_all_nats()
        with error_context(nat=name), self._lock(), Reverter() as revert:
            nat = self.store.add_nat(name, sw, str(net), dhcp)
            revert.add(lambda: self.store.remove_nat(nat.id))
            # ip_forward is per network namespace: on while a NAT needs it, then as nestor found it.
            revert.add(lambda: self._apply_nat(sw.netns, exclude=nat.id))
            self._apply_nat(sw.netns)
            if dhcp:
                with netlink.session(sw.netns) as ipr:
                    netlink.require(ipr, sw.bridge, sw.netns)
                dnsmasq.start(sw.netns, self._dhcp_config(nat, sw))
                revert.add(lambda: dnsmasq.stop(self.files.dnsmasq_pid(nat.id)))
            revert.success()
        return nat

    def _dhcp_config(self, nat: Nat, sw: Switch) -> dnsmasq.DhcpConfig:
        return dnsmasq.DhcpConfig(
            bridge=sw.bridge, prefix=ipaddress.IPv4Network(nat.prefix),
            gateway=ipaddress.IPv4Interface(sw.address or "").ip,
            pidfile=self.files.dnsmasq_pid(nat.id), leasefile=self.files.dnsmasq_leases(nat.id),
            logfile=self.files.dnsmasq_log(nat.id),
            # the names dnsmasq may publish: each adapter on the NAT's switch gets its VM's name
            hosts=tuple((a.mac, a.vm) for a in self.store.adapters_on_switch(nat.switch_id)),
        )

    def nat_list(self) -> list[NatInfo]:
        self._reconcile_all_nats()
        return [self.nat_info(nat) for nat in self.store.nats()]

    def nat_info(self, nat: Nat) -> NatInfo:
        """A stored NAT with its gateway, its dnsmasq and its leases as they are now."""
        from .nat_view import nat_info

        return nat_info(self.store, self.files, nat)

    def nat_remove(self, name: str) -> None:
        self.store.nat(name)
        host.require_net_admin()
        self._reconcile_all_nats()
        with error_context(nat=name), self._lock():
            nat = self.store.nat(name)
            dnsmasq.stop(self.files.dnsmasq_pid(nat.id))
            log_file = self.files.dnsmasq_log(nat.id)
            for path in (self.files.dnsmasq_leases(nat.id), log_file, log_file.with_name(log_file.name + ".1")):
                path.unlink(missing_ok=True)
            try:
                host.require_netns(nat.netns)
                self._apply_nat(nat.netns, exclude=nat.id)
            except NotFound:
                pass  # the namespace is gone, and its tables with it
            self.store.remove_nat(nat.id)

