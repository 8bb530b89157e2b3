"""Other machines: libvirt hosts, as nestor's engine for VMs that do not run on this one.

    caps.py            pure: libvirt's capabilities and domain capabilities XML → HostCaps
    domxml.py          pure: a DomainSpec → libvirt domain XML (golden-tested)
    migration.py       pure: the flags and parameters of a live migration
    libvirt_engine.py  the typed adapter over the libvirt binding (connections, domains, stats)
    keepalive.py       libvirt's event loop and keepalive: calls on an open connection end when its host dies
    store.py           SQLite: registered hosts and the VMs nestor made on them
    hosts.py           the driver: host add/list/show/remove, vm new/start/stop/…/move on hosts, with
                       the Hypervisor protocol's signatures and typed results (nats.py: its NATs)
"""
