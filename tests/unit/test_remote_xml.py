"""libvirt XML, pure: domain capabilities → nesting, and domain XML (regenerate with NESTOR_REGOLD=1)."""

import os
from pathlib import Path

import pytest

from nestor.errors import InvalidInput
from nestor.remote import caps, domxml, testnode

GOLDEN = Path(__file__).parent / "golden"

# The shape libvirt 7.x/9.x's qemu driver returns for an AMD KVM host: EPYC-Rome already holds svm,
# so svm is not listed among the host-model's extra features.
EPYC_HOST_MODEL = """<domainCapabilities><domain>kvm</domain><arch>x86_64</arch><vcpu max='288'/><cpu>
<mode name='host-passthrough' supported='yes'/><mode name='maximum' supported='yes'/>
<mode name='host-model' supported='yes'><model fallback='forbid'>EPYC-Rome</model><vendor>AMD</vendor>
<feature policy='require' name='x2apic'/><feature policy='require' name='vgif'/></mode>
<mode name='custom' supported='yes'><model usable='yes' vendor='AMD'>EPYC</model></mode></cpu></domainCapabilities>"""

TCG = """<domainCapabilities><domain>qemu</domain><arch>x86_64</arch><vcpu max='255'/><cpu>
<mode name='host-passthrough' supported='no'/><mode name='maximum' supported='yes'/>
<mode name='host-model' supported='yes'><model fallback='forbid'>EPYC</model><vendor>AMD</vendor></mode>
</cpu></domainCapabilities>"""


def test_nesting_from_host_model_features() -> None:
    amd = caps.parse_domcaps(testnode.domcaps("amd"))
    assert (amd.nesting, amd.nesting_flag, amd.vendor, amd.virt_type) == (True, "svm", "AMD", "kvm")
    intel = caps.parse_domcaps(testnode.domcaps("intel"))
    assert (intel.nesting, intel.nesting_flag, intel.vendor) == (True, "vmx", "Intel")
    off = caps.parse_domcaps(testnode.domcaps("amd-nonested"))
    assert not off.nesting and "kvm_amd" in off.nesting_reason


def test_nesting_in_the_model_needs_the_expanded_features() -> None:
    unknown = caps.parse_domcaps(EPYC_HOST_MODEL)
    assert not unknown.nesting and unknown.nesting_reason.startswith("unknown")
    expanded = caps.parse_domcaps(EPYC_HOST_MODEL, frozenset({"svm", "npt", "x2apic"}))
    assert (expanded.nesting, expanded.nesting_flag) == (True, "svm")
    assert not caps.parse_domcaps(EPYC_HOST_MODEL, frozenset({"x2apic"})).nesting
    cpu = caps.host_model_cpu(EPYC_HOST_MODEL)
    assert cpu is not None and "EPYC-Rome" in cpu and "mode=\"custom\"" in cpu


def test_tcg_host_offers_emulated_svm() -> None:
    tcg = caps.parse_domcaps(TCG)
    assert (tcg.nesting, tcg.nesting_flag, tcg.max_vcpus) == (True, "svm", 255)
    assert "TCG" in tcg.nesting_reason


def _cpu(kind: str) -> caps.CpuCaps:
    return caps.parse_domcaps(testnode.domcaps(kind)) if kind in testnode.DOMCAPS else caps.parse_domcaps(TCG)


CASES = {
    "kvm_amd_nested": (domxml.DomainSpec(
        name="l1", uuid="6695eb01-f6a4-8304-79aa-97f2502e193f", virt_type="kvm", vcpus=2, memory=2 << 30,
        current_memory=1 << 30, cpu=domxml.cpu_plan(_cpu("amd"), True), nested=True, machine="q35",
        disk="/var/lib/libvirt/images/l1.qcow2", nics=(domxml.Nic("52:54:00:12:34:56", network="default"),))),
    "kvm_intel_hidden_spoofing": (domxml.DomainSpec(
        name="web", uuid="00000000-0000-0000-0000-000000000001", virt_type="kvm", vcpus=1, memory=512 << 20,
        current_memory=512 << 20, cpu=domxml.cpu_plan(_cpu("intel"), False), nested=False,
        nics=(domxml.Nic("52:54:00:00:00:01", bridge="br0", mac_guard=False),))),
    "tcg_nested": (domxml.DomainSpec(
        name="l1", uuid="00000000-0000-0000-0000-000000000002", virt_type="qemu", vcpus=2, memory=1 << 30,
        current_memory=1 << 30, cpu=domxml.cpu_plan(_cpu("tcg"), True), nested=True, agent=False)),
    "tcg_nested_host_api_channel": (domxml.DomainSpec(
        name="l1", uuid="00000000-0000-0000-0000-000000000004", virt_type="qemu", vcpus=2, memory=1 << 30,
        current_memory=1 << 30, cpu=domxml.cpu_plan(_cpu("tcg"), True), nested=True, machine="q35",
        disk="/srv/l1.qcow2", api_channel=True)),
    "tcg_kernel_boot_serial_file": (domxml.DomainSpec(
        name="app", uuid="00000000-0000-0000-0000-000000000003", virt_type="qemu", vcpus=1, memory=256 << 20,
        current_memory=256 << 20, cpu=domxml.cpu_plan(_cpu("tcg"), False), nested=False, machine="q35",
        kernel="/srv/vmlinux", initrd="/srv/initrd.img", append="console=ttyS0 quiet",
        serial_log="/srv/app-serial.log")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_domain_xml_golden(case: str) -> None:
    text = domxml.render(CASES[case])
    golden = GOLDEN / f"domxml_{case}.xml"
    if os.environ.get("NESTOR_REGOLD"):
        golden.write_text(text)
    assert text == golden.read_text()
    assert domxml.nested_from_xml(text) is CASES[case].nested


def test_cpu_plan_maps_the_toggle() -> None:
    assert domxml.cpu_plan(_cpu("amd"), True) == domxml.CpuPlan("host-model", (("require", "svm"),))
    assert domxml.cpu_plan(_cpu("intel"), True) == domxml.CpuPlan("host-model", (("require", "vmx"),))
    hidden = domxml.cpu_plan(_cpu("amd"), False)
    assert hidden.features == (("disable", "svm"), ("disable", "vmx"))
    passthrough_only = caps.CpuCaps("kvm", "AMD", None, ("host-passthrough",), True, "svm", "x")
    assert domxml.cpu_plan(passthrough_only, True) == domxml.CpuPlan("host-passthrough", ())
    assert domxml.cpu_plan(_cpu("tcg"), True) == domxml.CpuPlan("maximum", (("require", "svm"),))
    with pytest.raises(InvalidInput, match="cannot offer nested"):
        domxml.cpu_plan(_cpu("amd-nonested"), True)


def test_mac_guard_is_clean_traffic() -> None:
    guarded = domxml.render(CASES["kvm_amd_nested"])
    assert "<filterref filter=\"clean-traffic\" />" in guarded
    assert "filterref" not in domxml.render(CASES["kvm_intel_hidden_spoofing"])


def test_api_channel_only_for_nested_hosts() -> None:
    text = domxml.render(CASES["tcg_nested_host_api_channel"])
    assert "<target type=\"virtio\" name=\"org.nestor.api.0\" />" in text
    assert "org.nestor.api.0" not in domxml.render(CASES["tcg_nested"])


def test_disk_moved_in_the_domain_xml() -> None:
    text = domxml.render(CASES["kvm_amd_nested"])
    moved, dev = domxml.with_disk_at(text, "/var/lib/libvirt/images/l1.qcow2", "/srv/pool/l1.qcow2")
    assert dev == "vda" and "file=\"/srv/pool/l1.qcow2\"" in moved and "/var/lib/libvirt/images" not in moved
    assert domxml.nested_from_xml(moved) is True  # nestor's metadata survives
    with pytest.raises(InvalidInput, match="no file disk at /nope"):
        domxml.with_disk_at(text, "/nope", "/x")
    vol = domxml.volume_xml("l1.qcow2", 8 << 30, "qcow2")
    assert vol == ("<volume><name>l1.qcow2</name><capacity unit=\"bytes\">8589934592</capacity>"
                   "<target><format type=\"qcow2\" /></target></volume>")
