"""A level's report in one answer (Hypervisor.level_report, GET /v1/level): what a lab's plan
and `lab up` compare the file to, read from this level's database with no host change.

`lab plan` asked each level four lists before (vm, switch, NAT, and each VM's adapters): four
round trips through a VM's API channel per level, and `nat list` first makes every NAT real
again (the nft ruleset, each dnsmasq), a change a plan must not make. This reads the same stored
facts the plan used from those lists; VM states are observed as `vm list` observes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .types import LevelAdapter, LevelReport, LevelSwitch

if TYPE_CHECKING:
    from ..service import Service


def report(service: Service) -> LevelReport:
    from ..service import nat_view

    vms = service.vm_list()
    store, files = nat_view.store_of(service.core.conn, service.core.home.root)  # not service/network.py: it reads only
    switches = [LevelSwitch(sw.name, sw.type, sw.address) for sw in store.switches()]
    # by VM and name, as `adapter list` of each VM in turn shows them (the store's order is the order
    # they were made, which a lab's parallel VMs make in any order)
    adapters = sorted((LevelAdapter(a.vm, a.name, a.switch, a.mac, a.mac_spoofing) for a in store.all_adapters()),
                      key=lambda a: (a.vm, a.name))
    nats = [nat_view.nat_info(store, files, nat) for nat in store.nats()]
    if service.remote.has_nats():
        nats += service.remote.nats.nat_list()
    return LevelReport(vms, switches, adapters, nats)
