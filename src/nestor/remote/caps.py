"""What a libvirt host can offer, from its XML. Pure: XML text in, HostCaps out.

Nesting comes from the domain capabilities (``virConnectGetDomainCapabilities``) of the best
virtualization type the host has:

- kvm: the host-model CPU. A ``svm``/``vmx`` feature with policy ``require`` means the host's
  KVM exposes it (kvm_amd/kvm_intel ``nested=1``); ``disable`` means it does not. The named model
  (e.g. EPYC-Rome) may carry svm itself, so when the feature is not listed the adapter passes
  the host-model CPU's expanded feature list (``virConnectBaselineHypervisorCPU`` with
  EXPAND_FEATURES) when libvirt can give it; without it the answer is "unknown", never a guess.
- qemu (TCG): QEMU's ``maximum`` CPU emulates AMD-V (svm), as nestor's own TCG hosts do; slow.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field, replace
from typing import Any

NESTING_FLAGS = {"AMD": "svm", "Intel": "vmx", "Hygon": "svm"}
KVM_MODULES = {"svm": "kvm_amd", "vmx": "kvm_intel"}
DEFAULT_MAX_VCPUS = 288  # QEMU's x86 limit, when the domain capabilities do not say


@dataclass(frozen=True)
class CpuCaps:
    """The CPU side of a host's domain capabilities."""

    virt_type: str  # kvm | qemu | test
    vendor: str | None
    model: str | None
    modes: tuple[str, ...]  # supported CPU modes: host-passthrough, host-model, maximum, custom
    nesting: bool
    nesting_flag: str | None  # svm | vmx
    nesting_reason: str
    max_vcpus: int = DEFAULT_MAX_VCPUS


@dataclass(frozen=True)
class HostCaps:
    """A libvirt host as nestor shows it; memory in bytes."""

    driver: str
    hostname: str
    arch: str
    cpus: int
    memory_total: int
    free_memory: int
    free_memory_source: str  # "libvirt" | "estimated: total - running VMs"
    vms: int
    cpu: CpuCaps
    domain_type: str = "kvm"  # the <domain type> this driver accepts (kvm | qemu | test)
    libvirt_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        cpu = data.pop("cpu")
        return {**data, **{("cpu_modes" if k == "modes" else k): v for k, v in cpu.items()}}


def _modes(cpu: ET.Element | None) -> dict[str, ET.Element]:
    if cpu is None:
        return {}
    return {m.get("name", ""): m for m in cpu.findall("mode") if m.get("supported") == "yes"}


def parse_domcaps(xml: str, expanded: frozenset[str] | None = None) -> CpuCaps:
    """The CPU modes, vendor, vCPU limit and nesting ability in a <domainCapabilities> document.

    `expanded`: every feature of the host-model CPU (model features included), if known."""
    root = ET.fromstring(xml)
    vcpu = root.find("vcpu")
    limit = int(vcpu.get("max", DEFAULT_MAX_VCPUS)) if vcpu is not None else DEFAULT_MAX_VCPUS
    return replace(_cpu(root, expanded), max_vcpus=limit)


def _cpu(root: ET.Element, expanded: frozenset[str] | None) -> CpuCaps:
    virt_type = (root.findtext("domain") or "").strip() or "unknown"
    modes = _modes(root.find("cpu"))
    host_model = modes.get("host-model")
    vendor = (host_model.findtext("vendor") or "").strip() or None if host_model is not None else None
    model = (host_model.findtext("model") or "").strip() or None if host_model is not None else None
    names = tuple(sorted(modes))
    if virt_type == "qemu":
        if "maximum" in modes:
            return CpuCaps(virt_type, vendor, model, names, True, "svm",
                           "emulated by TCG (AMD-V in QEMU's maximum CPU); slow, no KVM on this host")
        return CpuCaps(virt_type, vendor, model, names, False, None,
                       "TCG only, and this libvirt has no 'maximum' CPU mode")
    flag = NESTING_FLAGS.get(vendor or "")
    if host_model is None:
        if "host-passthrough" in modes:
            return CpuCaps(virt_type, vendor, model, names, False, flag,
                           "unknown: only host-passthrough is offered, so the host's CPU features are not listed")
        return CpuCaps(virt_type, vendor, model, names, False, None, "no host-model CPU mode")
    policies = {f.get("name"): f.get("policy") for f in host_model.findall("feature")}
    for name in ("svm", "vmx"):
        if policies.get(name) == "require":
            return CpuCaps(virt_type, vendor, model, names, True, name, f"{name} offered in the host-model CPU")
    for name in ("svm", "vmx"):
        if policies.get(name) == "disable":
            return CpuCaps(virt_type, vendor, model, names, False, name,
                           f"{name} is disabled in the host-model CPU: nested is off in {KVM_MODULES[name]}")
    if expanded is not None:
        for name in ("svm", "vmx"):
            if name in expanded:
                return CpuCaps(virt_type, vendor, model, names, True, name,
                               f"{name} offered (part of the host-model CPU {model})")
        return CpuCaps(virt_type, vendor, model, names, False, flag,
                       f"no svm or vmx in the host-model CPU {model}")
    return CpuCaps(virt_type, vendor, model, names, False, flag,
                   f"unknown: svm/vmx not listed for {model} and libvirt could not expand its features")


def unknown_cpu(virt_type: str, reason: str) -> CpuCaps:
    return CpuCaps(virt_type, None, None, (), False, None, reason)


def host_model_cpu(xml: str) -> str | None:
    """The host-model CPU as a <cpu> document for virConnectBaselineHypervisorCPU, if offered."""
    root = ET.fromstring(xml)
    mode = _modes(root.find("cpu")).get("host-model")
    if mode is None or mode.find("model") is None:
        return None
    cpu = ET.Element("cpu", {"mode": "custom", "match": "exact"})
    for child in mode:
        if child.tag in ("model", "vendor", "feature"):
            cpu.append(child)
    return ET.tostring(cpu, encoding="unicode")


def expanded_features(cpu_xml: str) -> frozenset[str]:
    """Feature names of a baseline CPU returned with VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES."""
    root = ET.fromstring(cpu_xml)
    return frozenset(f.get("name", "") for f in root.iter("feature") if f.get("policy", "require") == "require")


def parse_capabilities(xml: str) -> dict[str, Any]:
    """Host arch, vendor and the guest domain types (kvm, qemu, test) from <capabilities>."""
    root = ET.fromstring(xml)
    host_cpu = root.find("host/cpu")
    arch = (host_cpu.findtext("arch") if host_cpu is not None else None) or ""
    vendor = (host_cpu.findtext("vendor") if host_cpu is not None else None) or None
    types: list[str] = []
    cells = root.findall("host/topology/cells/cell")
    for guest in root.findall("guest"):
        for dom in guest.findall("arch/domain"):
            t = dom.get("type", "")
            if t and t not in types:
                types.append(t)
    return {"arch": arch.strip(), "vendor": vendor.strip() if vendor else None, "domain_types": types,
            "numa_cells": len(cells)}


def best_virt_type(domain_types: list[str]) -> str:
    for candidate in ("kvm", "qemu", "test"):
        if candidate in domain_types:
            return candidate
    return domain_types[0] if domain_types else "unknown"
