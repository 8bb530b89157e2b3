"""Run inside a guest (python3, root): send the frames a hostile VM would, raw on eth0.

argv: OWN_IP HOST_IP ROUNDS [LABEL,...]. Prints one "sent KIND" line per frame kind sent. Every
frame that may carry the adapter's own MAC as source does, so only the rule meant for it can drop
it. With LABELs only those frames are sent (one each per round): "offer-6767" (a rogue DHCP offer
from a non-standard source port) and "chaddr" (a DHCP discover naming another MAC inside BOOTP).
"""

import socket
import struct
import sys
import time

IF = "eth0"
AF6 = socket.AF_INET6
own_ip, host_ip, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
only = set(sys.argv[4].split(",")) if len(sys.argv) > 4 else None
with open(f"/sys/class/net/{IF}/address") as f:
    mine = bytes.fromhex(f.read().strip().replace(":", ""))
forged = bytes.fromhex("525400dead01")
bcast = b"\xff" * 6
own_ll = "fe80::" + ":".join(f"{a:x}" for a in struct.unpack("!4H", bytes([mine[0] ^ 2, mine[1], mine[2], 0xff,
                                                                               0xfe, mine[3], mine[4], mine[5]])))


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total >> 16) + (total & 0xFFFF)
    return ~total & 0xFFFF


def eth(dst: bytes, src: bytes, etype: int, payload: bytes) -> bytes:
    return dst + src + struct.pack("!H", etype) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0,
                       socket.inet_aton(src), socket.inet_aton(dst))
    return head[:10] + struct.pack("!H", csum(head)) + head[12:] + payload


def udp4(src: str, dst: str, sport: int, dport: int, data: bytes) -> bytes:
    return ipv4(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data)


def ipv6(src: str, dst: str, nh: int, payload: bytes) -> bytes:
    return (struct.pack("!IHBB", 6 << 28, len(payload), nh, 255) + socket.inet_pton(AF6, src)
            + socket.inet_pton(AF6, dst) + payload)


def l4v6(src: str, dst: str, nh: int, body: bytes, at: int) -> bytes:
    pseudo = socket.inet_pton(AF6, src) + socket.inet_pton(AF6, dst) + struct.pack("!I3xB", len(body), nh)
    check = csum(pseudo + body)
    return ipv6(src, dst, nh, body[:at] + struct.pack("!H", check) + body[at + 2:])


def icmp6(src: str, dst: str, body: bytes) -> bytes:
    return l4v6(src, dst, 58, body, 2)


def mcast6(addr: str) -> bytes:
    return b"\x33\x33" + socket.inet_pton(AF6, addr)[-4:]


def frames() -> list[tuple]:  # (counter kind, frame[, label])
    out = []
    # 1. a frame with another machine's source MAC
    out.append(("mac", eth(bcast, forged, 0x0800, udp4(own_ip, host_ip, 40000, 9, b"forged source"))))
    # 2. ARP: correct frame source, forged sender MAC inside (a request to the host, which would
    #    learn the sender: 'who has HOST? tell FAKE_IP at FORGED')
    fake_ip = own_ip.rsplit(".", 1)[0] + ".77"
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, forged, socket.inet_aton(fake_ip), b"\0" * 6,
                      socket.inet_aton(host_ip))
    out.append(("arp", eth(bcast, mine, 0x0806, arp)))
    # 2b. the same ARP inside an 802.1Q tag (VLAN 5), where an ARP rule would not look
    out.append(("vlan", eth(bcast, mine, 0x8100, struct.pack("!HH", 5, 0x0806) + arp)))
    # 3. neighbour solicitation and advertisement with a forged link-layer address option
    target = "fe80::dead"
    ns = struct.pack("!BBHI", 135, 0, 0, 0) + socket.inet_pton(AF6, target) + bytes([1, 1]) + forged
    out.append(("nd", eth(mcast6("ff02::1:ff00:dead"), mine, 0x86DD, icmp6(own_ll, "ff02::1:ff00:dead", ns))))
    na = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + socket.inet_pton(AF6, own_ll) + bytes([2, 1]) + forged
    out.append(("nd", eth(mcast6("ff02::1"), mine, 0x86DD, icmp6(own_ll, "ff02::1", na))))
    # 4. a router advertisement: default router for 30 min, prefix 2001:db8:77::/64 for SLAAC
    ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
    ra += bytes([1, 1]) + mine
    ra += struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0) + socket.inet_pton(AF6, "2001:db8:77::")
    out.append(("router", eth(mcast6("ff02::1"), mine, 0x86DD, icmp6(own_ll, "ff02::1", ra))))
    # 5. an IPv4 ICMP redirect to the host: 'for 198.51.100.0 use me'
    inner = ipv4(host_ip, "198.51.100.7", 17, struct.pack("!HHHH", 1234, 53, 8, 0))
    body = struct.pack("!BBH4s", 5, 1, 0, socket.inet_aton(own_ip)) + inner[:28]
    body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    out.append(("router", eth(bcast, mine, 0x0800, ipv4(own_ip, host_ip, 1, body))))
    # 6. a DHCPv4 offer (server port 67 to client port 68) handing out a rogue gateway
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 2, 1, 6, 0, 0x1234, 0, 0x8000, b"\0" * 4,
                        socket.inet_aton(fake_ip), socket.inet_aton(own_ip), b"\0" * 4, forged + b"\0" * 10,
                        b"", b"")
    bootp += b"\x63\x82\x53\x63" + bytes([53, 1, 2, 3, 4]) + socket.inet_aton(own_ip) + bytes([255])
    out.append(("dhcp", eth(bcast, mine, 0x0800, udp4(own_ip, "255.255.255.255", 67, 68, bootp))))
    # 6b. the same offer from port 6767: clients take offers from any source port
    out.append(("dhcp", eth(bcast, mine, 0x0800, udp4(own_ip, "255.255.255.255", 6767, 68, bootp)), "offer-6767"))
    # 6c. a DHCP discover (client port 68 to server port 67) from the adapter's own MAC whose
    #     BOOTP client address (chaddr) is another machine's: dnsmasq keys leases on chaddr
    discover = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, 0x4321, 0, 0x8000, b"\0" * 4, b"\0" * 4,
                           b"\0" * 4, b"\0" * 4, forged + b"\0" * 10, b"", b"")
    discover += b"\x63\x82\x53\x63" + bytes([53, 1, 1, 255])
    out.append(("mac", eth(bcast, mine, 0x0800, udp4("0.0.0.0", "255.255.255.255", 68, 67, discover)), "chaddr"))
    # 7. a DHCPv6 advertise (server port 547 to client port 546)
    adv = bytes([2, 0x12, 0x34, 0x56])
    udp = struct.pack("!HHHH", 547, 546, 8 + len(adv), 0) + adv
    out.append(("dhcp", eth(mcast6("ff02::1"), mine, 0x86DD, l4v6(own_ll, "ff02::1", 17, udp, 6))))
    return out


sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((IF, 0))
labelled = [(f[0], f[1], f[2] if len(f) > 2 else f[0]) for f in frames()]
kinds = [(kind, frame) for kind, frame, label in labelled if only is None or label in only]
for _ in range(rounds):
    for _kind, frame in kinds:
        sock.send(frame)
    time.sleep(0.2)
for kind in sorted({k for k, _ in kinds}):
    print(f"sent {kind}")
