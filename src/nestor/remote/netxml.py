"""libvirt network XML for the seed's NAT on a libvirt host. Pure (golden-tested).

The seed's NAT (New-VMSwitch -SwitchType Internal + New-NetIPAddress + New-NetNat, with DHCP)
is one libvirt object there: a network with ``<forward mode='nat'/>``, the gateway address on its
bridge and, with DHCP, libvirt's dnsmasq serving a range. libvirt names the bridge (virbrN) and
writes the masquerade and forwarding rules on that host.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from ..net import addresses


@dataclass(frozen=True)
class NatSpec:
    name: str
    uuid: str
    prefix: str  # 192.168.100.0/24
    dhcp: bool


def gateway(prefix: str) -> ipaddress.IPv4Address:
    """The host's address on the NAT: the prefix's first address, as `nat new --switch` suggests."""
    return next(ipaddress.IPv4Network(prefix).hosts())


def render(spec: NatSpec) -> str:
    net = ipaddress.IPv4Network(spec.prefix)
    gw = gateway(spec.prefix)
    root = ET.Element("network")
    ET.SubElement(root, "name").text = spec.name
    ET.SubElement(root, "uuid").text = spec.uuid
    forward = ET.SubElement(root, "forward", mode="nat")
    ET.SubElement(forward, "nat").append(ET.Element("port", start="1024", end="65535"))
    ET.SubElement(root, "bridge", stp="off", delay="0")  # libvirt picks the name (virbrN)
    ip = ET.SubElement(root, "ip", address=str(gw), prefix=str(net.prefixlen))
    if spec.dhcp:
        start, end = addresses.dhcp_range(net, gw)
        ET.SubElement(ET.SubElement(ip, "dhcp"), "range", start=str(start), end=str(end))
    ET.indent(root, "  ")
    return ET.tostring(root, encoding="unicode") + "\n"
