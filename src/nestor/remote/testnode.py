"""<node> files for libvirt's test driver (test:///PATH.xml): simulated hosts for tests and the
scale benchmark. Each names its CPU, memory and domains, plus a <domainCapabilities> element in
the format libvirt's qemu driver returns, which nestor reads in place of the API the test
driver lacks (remote/libvirt_engine.py)."""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

KiB = 1024

DOMCAPS = {
    # A KVM host whose kvm_amd has nested=1: host-model requires svm.
    "amd": ("kvm", "AMD", "EPYC-Rome", "<feature policy='require' name='svm'/>"),
    # A KVM host whose kvm_intel has nested=1.
    "intel": ("kvm", "Intel", "Skylake-Server-IBRS", "<feature policy='require' name='vmx'/>"),
    # An AMD host with kvm_amd nested=0: libvirt disables svm in host-model.
    "amd-nonested": ("kvm", "AMD", "EPYC-Rome", "<feature policy='disable' name='svm'/>"),
}


def domcaps(kind: str) -> str:
    virt, vendor, model, feature = DOMCAPS[kind]
    return (
        "<domainCapabilities>"
        "<path>/usr/bin/qemu-system-x86_64</path>"
        f"<domain>{virt}</domain><machine>pc-q35-7.2</machine><arch>x86_64</arch><vcpu max='288'/>"
        "<cpu>"
        "<mode name='host-passthrough' supported='yes'/>"
        "<mode name='maximum' supported='yes'/>"
        f"<mode name='host-model' supported='yes'><model fallback='forbid'>{model}</model>"
        f"<vendor>{vendor}</vendor><feature policy='require' name='x2apic'/>{feature}</mode>"
        "</cpu>"
        "</domainCapabilities>"
    )


@dataclass(frozen=True)
class SimDomain:
    name: str
    uuid: str
    memory: int  # bytes
    running: bool = True
    nested: bool = False


def node_xml(kind: str, memory: int, cpus: int = 16, domains: list[SimDomain] | None = None) -> str:
    parts = [
        "<node>",
        f"<cpu><mhz>2600</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets><cores>{cpus}</cores>"
        f"<threads>1</threads><active>{cpus}</active></cpu>",
        f"<memory>{memory // KiB}</memory>",
        domcaps(kind),
    ]
    for dom in domains or []:
        state = "1" if dom.running else "5"
        nested = "yes" if dom.nested else "no"
        parts.append(
            "<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>"
            f"<name>{escape(dom.name)}</name><uuid>{dom.uuid}</uuid>"
            "<metadata><nestor:vm xmlns:nestor='https://nestor.invalid/xmlns/libvirt/1'>"
            f"<nestor:nested>{nested}</nestor:nested></nestor:vm></metadata>"
            f"<memory unit='KiB'>{dom.memory // KiB}</memory><currentMemory unit='KiB'>{dom.memory // KiB}</currentMemory>"
            "<vcpu>1</vcpu><os><type>hvm</type></os>"
            f"<test:runstate>{state}</test:runstate>"
            "</domain>"
        )
    parts.append("</node>\n")
    return "\n".join(parts)
