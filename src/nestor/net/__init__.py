"""Host networking: switches (Linux bridges), adapters (taps), nft tables, dnsmasq.

Modules, one concern each:

- ``names``      kernel names (IFNAMSIZ-safe), nft table names, files under $HOME_DIR/net
- ``addresses``  pure validation: MACs, ADDR/PREFIX, NAT prefixes, overlaps, DHCP ranges
- ``store``      the switches / adapters / nats rows
- ``host``       privilege (CAP_NET_ADMIN) and network-namespace checks
- ``run``        subprocesses (nft, sysctl, dnsmasq), inside a netns, always with a timeout
- ``netlink``    bridges, taps and addresses through pyroute2
- ``nft``        the MAC guard and NAT tables: rendered whole, applied atomically
- ``dnsmasq``    DHCP + DNS for NAT switches
- ``revert``     undo registered host changes when a use case fails half-way
"""
