"""libvirt domain XML for a nestor VM. Pure: a frozen DomainSpec in, XML text out (golden-tested).

The seed's processor rule maps onto libvirt's CPU element:

| nestor                         | libvirt                                                       |
|--------------------------------|---------------------------------------------------------------|
| nesting on, KVM host           | host-model CPU + ``<feature policy='require' name='svm|vmx'/>`` |
|                                | (host-passthrough where host-model is missing)                |
| nesting on, TCG host           | ``maximum`` CPU + ``require svm`` (TCG emulates AMD-V only)    |
| nesting off ("hidden")         | the same mode + ``<feature policy='disable'>`` for svm and vmx |

The MAC guard (spoofing off) is libvirt's ``clean-traffic`` nwfilter on each interface: it drops
frames whose source MAC (and IP/ARP) is not the interface's own, as nestor's nft bridge rule does.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from ..errors import InvalidInput
from ..paths import API_PORT
from .caps import CpuCaps

NESTOR_NS = "https://nestor.invalid/xmlns/libvirt/1"
MAC_GUARD_FILTER = "clean-traffic"
API_CHANNEL = API_PORT  # org.nestor.api.0: the nestor inside serves its API there (remote/apichannel.py)
KiB = 1024
ET.register_namespace("nestor", NESTOR_NS)


@dataclass(frozen=True)
class CpuPlan:
    mode: str | None  # host-model | host-passthrough | maximum | None (driver default)
    features: tuple[tuple[str, str], ...]  # (policy, name)


@dataclass(frozen=True)
class Nic:
    mac: str
    network: str | None = None  # a libvirt network (NAT: a libvirt NAT network)
    bridge: str | None = None  # or a bridge on the host
    mac_guard: bool = True  # MAC spoofing off (the default, as for local VMs)


@dataclass(frozen=True)
class DomainSpec:
    name: str
    uuid: str
    virt_type: str  # kvm | qemu | test
    vcpus: int
    memory: int  # bytes: the room (libvirt's <memory>, the most the balloon can give)
    current_memory: int  # bytes: what the guest gets at start
    cpu: CpuPlan
    nested: bool
    arch: str | None = "x86_64"
    machine: str | None = None
    disk: str | None = None  # a qcow2/raw file on that host
    kernel: str | None = None  # direct kernel boot (files on that host)
    initrd: str | None = None
    append: str | None = None
    serial_log: str | None = None  # the serial console into this file on that host (else a pty)
    nics: tuple[Nic, ...] = ()
    agent: bool = True  # a virtio-serial channel for qemu-guest-agent
    api_channel: bool = False  # the nestor API port of a nested host (nesting on), as local L1s have


def cpu_plan(cpu: CpuCaps, nested: bool) -> CpuPlan:
    """The <cpu> element for the seed's toggle on a host with these capabilities."""
    if nested and not cpu.nesting:
        raise InvalidInput(f"this host cannot offer nested virtualization: {cpu.nesting_reason}",
                           hint="nestor host list shows which hosts can")
    if cpu.virt_type == "qemu":
        mode: str | None = "maximum"
    elif "host-model" in cpu.modes or cpu.virt_type == "test":
        mode = "host-model"
    elif "host-passthrough" in cpu.modes:
        mode = "host-passthrough"
    else:
        mode = None
    if nested:
        flag = cpu.nesting_flag or "svm"
        if mode == "host-passthrough":
            return CpuPlan(mode, ())  # passthrough exposes the host's own svm/vmx
        return CpuPlan(mode, (("require", flag),))
    return CpuPlan(mode, (("disable", "svm"), ("disable", "vmx")))


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def render(spec: DomainSpec) -> str:
    dom = ET.Element("domain", {"type": spec.virt_type})
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", spec.uuid)
    meta = _sub(dom, "metadata")
    vm = ET.SubElement(meta, f"{{{NESTOR_NS}}}vm")
    _sub(vm, f"{{{NESTOR_NS}}}nested", "yes" if spec.nested else "no")
    _sub(dom, "memory", str(spec.memory // KiB), unit="KiB")
    _sub(dom, "currentMemory", str(spec.current_memory // KiB), unit="KiB")
    _sub(dom, "vcpu", str(spec.vcpus))
    os_ = _sub(dom, "os")
    attrs = {k: v for k, v in (("arch", spec.arch), ("machine", spec.machine)) if v}
    _sub(os_, "type", "hvm", **attrs)
    if spec.kernel:
        _sub(os_, "kernel", spec.kernel)
        if spec.initrd:
            _sub(os_, "initrd", spec.initrd)
        if spec.append:
            _sub(os_, "cmdline", spec.append)
    else:
        _sub(os_, "boot", dev="hd")
    if spec.virt_type != "test":
        features = _sub(dom, "features")
        _sub(features, "acpi")
    cpu_attrs = {"mode": spec.cpu.mode} if spec.cpu.mode else {}
    if spec.cpu.mode in ("host-passthrough", "maximum"):
        cpu_attrs["migratable"] = "on"
    cpu = _sub(dom, "cpu", **cpu_attrs)
    for policy, name in spec.cpu.features:
        _sub(cpu, "feature", policy=policy, name=name)
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    if spec.disk:
        disk = _sub(devices, "disk", type="file", device="disk")
        fmt = "qcow2" if spec.disk.endswith(".qcow2") else "raw"
        if spec.virt_type != "test":
            _sub(disk, "driver", name="qemu", type=fmt)
        _sub(disk, "source", file=spec.disk)
        _sub(disk, "target", dev="vda", bus="virtio")
    for nic in spec.nics:
        if nic.network:
            iface = _sub(devices, "interface", type="network")
            _sub(iface, "source", network=nic.network)
        elif nic.bridge:
            iface = _sub(devices, "interface", type="bridge")
            _sub(iface, "source", bridge=nic.bridge)
        else:
            raise InvalidInput("an interface needs a network or a bridge", hint="--network NAME")
        _sub(iface, "mac", address=nic.mac)
        _sub(iface, "model", type="virtio")
        if nic.mac_guard:
            _sub(iface, "filterref", filter=MAC_GUARD_FILTER)
    if spec.virt_type != "test":
        if spec.serial_log:
            serial = _sub(devices, "serial", type="file")
            _sub(serial, "source", path=spec.serial_log)
        else:
            serial = _sub(devices, "serial", type="pty")
        _sub(serial, "target", port="0")
        if not spec.serial_log:
            _sub(_sub(devices, "console", type="pty"), "target", type="serial", port="0")
        if spec.agent:
            channel = _sub(devices, "channel", type="unix")
            _sub(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
        if spec.api_channel:  # libvirt puts the socket in its channel directory; nestor opens it through libvirt
            channel = _sub(devices, "channel", type="unix")
            _sub(channel, "source", mode="bind")
            _sub(channel, "target", type="virtio", name=API_CHANNEL)
    balloon = _sub(devices, "memballoon", model="virtio")
    _sub(balloon, "stats", period="1")  # the guest's memory report, for R7 and `vm show`
    ET.register_namespace("nestor", NESTOR_NS)
    ET.indent(dom, "  ")
    return ET.tostring(dom, encoding="unicode") + "\n"


def nested_from_xml(xml: str) -> bool | None:
    """nestor's own record of the toggle in a domain's XML (None: not a nestor domain)."""
    root = ET.fromstring(xml)
    text = root.findtext(f"metadata/{{{NESTOR_NS}}}vm/{{{NESTOR_NS}}}nested")
    return None if text is None else text == "yes"


def disk_format(path: str) -> str:
    return "qcow2" if path.endswith(".qcow2") else "raw"


def volume_xml(name: str, capacity: int, fmt: str) -> str:
    """A storage volume for virStorageVolCreateXML: the target of a disk copy."""
    vol = ET.Element("volume")
    _sub(vol, "name", name)
    _sub(vol, "capacity", str(capacity), unit="bytes")
    _sub(_sub(vol, "target"), "format", type=fmt)
    return ET.tostring(vol, encoding="unicode")


def with_disk_at(xml: str, path: str, new_path: str) -> tuple[str, str]:
    """A domain's XML with the file disk at `path` moved to `new_path`, and that disk's target dev."""
    root = ET.fromstring(xml)
    for disk in root.iterfind("devices/disk"):
        source = disk.find("source")
        if source is not None and source.get("file") == path:
            source.set("file", new_path)
            target = disk.find("target")
            dev = target.get("dev") if target is not None else None
            if not dev:
                break
            return ET.tostring(root, encoding="unicode"), dev
    raise InvalidInput(f"the domain has no file disk at {path}", hint="nestor vm show NAME")
