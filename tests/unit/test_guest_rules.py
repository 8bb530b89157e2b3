"""Pure parts of disk-image guests: qemu-img verdicts, cloud-init rendering and flags, ssh argv,
firmware choice, the checkpoint rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nestor import cloudinit
from nestor.engine import firmware
from nestor.errors import InvalidInput, NotFound, PolicyError, StateError
from nestor.images import debian, store
from nestor.policy.checkpoints import check_checkpoint
from nestor.service import ssh as sshaccess

GOOD_QCOW2 = {"format": "qcow2", "virtual-size": 8 << 30, "actual-size": 1 << 20,
              "format-specific": {"type": "qcow2", "data": {"compat": "1.1"}}}


def test_verdict_accepts_self_contained_qcow2_and_raw() -> None:
    assert store.verdict(GOOD_QCOW2) is None
    assert store.verdict({"format": "raw", "virtual-size": 1 << 30}) is None


@pytest.mark.parametrize(("info", "reason"), [
    ({**GOOD_QCOW2, "backing-filename": "/etc/shadow", "backing-filename-format": "raw"}, "backing file"),
    ({**GOOD_QCOW2, "full-backing-filename": "/root/x"}, "backing file"),
    ({**GOOD_QCOW2, "format-specific": {"type": "qcow2", "data": {"data-file": "/dev/sda", "data-file-raw": True}}},
     "external data file"),
    ({"format": "vmdk", "virtual-size": 1 << 30}, "not qcow2 or raw"),
    ({"virtual-size": 1 << 30}, "cannot be identified"),
    ({"format": "raw", "virtual-size": 0}, "virtual size is 0"),
    ({"format": "qcow2", "virtual-size": (16 << 40) + 1}, "absurd"),
])
def test_verdict_refuses(info: dict[str, object], reason: str) -> None:
    verdict = store.verdict(info)
    assert verdict is not None and reason in verdict


def test_image_names() -> None:
    assert store.validate_image_name("debian-bookworm") == "debian-bookworm"
    for bad in ("appliance", "nested-host", "Bad_Name", "", "-x"):
        with pytest.raises(InvalidInput):
            store.validate_image_name(bad)


def test_network_config_matches_by_mac_static_and_dhcp() -> None:
    nics = (cloudinit.NicConfig("52:54:00:AA:00:01", cloudinit.StaticAddress("10.0.0.5/24", "10.0.0.1", ("10.0.0.53",))),
            cloudinit.NicConfig("52:54:00:aa:00:02"))
    text = cloudinit.network_config(nics)
    assert text is not None
    doc = json.loads(text)
    assert doc["version"] == 2
    eth0, eth1 = doc["ethernets"]["eth0"], doc["ethernets"]["eth1"]
    assert eth0["match"] == {"macaddress": "52:54:00:aa:00:01"}
    assert eth0["addresses"] == ["10.0.0.5/24"] and eth0["dhcp4"] is False
    assert eth0["routes"] == [{"to": "0.0.0.0/0", "via": "10.0.0.1"}]
    assert eth0["nameservers"] == {"addresses": ["10.0.0.53"]}
    assert eth1 == {"match": {"macaddress": "52:54:00:aa:00:02"}, "set-name": "eth1", "dhcp4": True}
    assert cloudinit.network_config(()) is None


def test_user_data_is_cloud_config_json() -> None:
    spec = cloudinit.SeedSpec("iid-1", "web1", user="alice", ssh_keys=("ssh-ed25519 AAAA alice@x",))
    text = cloudinit.user_data(spec)
    assert text.startswith("#cloud-config\n")
    doc = json.loads(text.split("\n", 1)[1])
    assert doc["users"][0]["name"] == "alice"
    assert doc["users"][0]["ssh_authorized_keys"] == ["ssh-ed25519 AAAA alice@x"]
    assert doc["hostname"] == "web1"
    own = cloudinit.SeedSpec("iid-1", "web1", user_data="#cloud-config\nruncmd: [true]\n")
    assert cloudinit.user_data(own) == "#cloud-config\nruncmd: [true]\n"
    assert json.loads(cloudinit.meta_data(spec)) == {"instance-id": "iid-1", "local-hostname": "web1"}


@pytest.mark.parametrize(("ip", "gw", "dns"), [
    ("10.0.0.5", None, []), ("10.0.0.300/24", None, []), ("10.0.0.0/24", None, []), ("fe80::1/64", None, []),
    ("10.0.0.5/24", "10.0.1.1", []), ("10.0.0.5/24", "10.0.0.5", []), ("10.0.0.5/24", "x", []),
    ("10.0.0.5/24", "10.0.0.1", ["nope"]),
])
def test_static_address_bad_input(ip: str, gw: str | None, dns: list[str]) -> None:
    with pytest.raises(InvalidInput):
        cloudinit.parse_static(ip, gw, dns)


def test_static_address_good() -> None:
    s = cloudinit.parse_static("192.168.100.10/24", "192.168.100.1", ["192.168.100.1", "9.9.9.9"])
    assert s == cloudinit.StaticAddress("192.168.100.10/24", "192.168.100.1", ("192.168.100.1", "9.9.9.9"))


def test_flags_validation(tmp_path: Path) -> None:
    for bad in ("Root", "root", "1abc", "a" * 40, "a b"):
        with pytest.raises(InvalidInput):
            cloudinit.validate_user(bad)
    for bad in ("-web", "web_1", "a" * 64, "a..b", ""):
        with pytest.raises(InvalidInput):
            cloudinit.validate_hostname(bad)
    assert cloudinit.validate_hostname("web-1.example.org") == "web-1.example.org"
    with pytest.raises(NotFound):
        cloudinit.read_public_key(tmp_path / "missing.pub")
    private = tmp_path / "id"
    private.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n")
    with pytest.raises(InvalidInput, match="private key"):
        cloudinit.read_public_key(private)
    junk = tmp_path / "junk.pub"
    junk.write_text("hello\n")
    with pytest.raises(InvalidInput):
        cloudinit.read_public_key(junk)
    good = tmp_path / "id_ed25519.pub"
    good.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE me@host\n")
    assert cloudinit.read_public_key(good).startswith("ssh-ed25519 ")
    assert cloudinit.private_key_for(good) is None
    (tmp_path / "id_ed25519").write_text("x")
    assert cloudinit.private_key_for(good) == tmp_path / "id_ed25519"
    ud = tmp_path / "ud"
    ud.write_text("runcmd: [x]\n")
    with pytest.raises(InvalidInput, match="#cloud-config"):
        cloudinit.read_user_data(ud)
    ud.write_bytes(b"#cloud-config\n\xff\xfe")
    with pytest.raises(InvalidInput, match="UTF-8"):
        cloudinit.read_user_data(ud)


def test_default_public_key(tmp_path: Path) -> None:
    assert cloudinit.default_public_key(tmp_path) is None
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa.pub").write_text("ssh-rsa AAAA x\n")
    assert cloudinit.default_public_key(tmp_path) == tmp_path / ".ssh" / "id_rsa.pub"


def test_ssh_argv_is_an_argv_with_netns_key_and_known_hosts() -> None:
    t = sshaccess.Target("10.0.0.5", "dhcp lease", "debian", Path("/k/id_ed25519"), "nt-1")
    argv = sshaccess.ssh_argv(t, Path("/h/known_hosts"), ["echo", "a b; rm -rf /"])
    assert argv[:5] == ["ip", "netns", "exec", "nt-1", "ssh"]
    assert "StrictHostKeyChecking=accept-new" in argv and "UserKnownHostsFile=/h/known_hosts" in argv
    assert argv[argv.index("-i") + 1] == "/k/id_ed25519" and argv[argv.index("-l") + 1] == "debian"
    assert argv[-4:] == ["--", "10.0.0.5", "echo", "a b; rm -rf /"]
    plain = sshaccess.ssh_argv(sshaccess.Target("10.0.0.5", "static", None, None, None), Path("/k"), [])
    assert plain[0] == "ssh" and "-i" not in plain and "-l" not in plain


def test_agent_addresses() -> None:
    interfaces = [
        {"name": "lo", "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "127.0.0.1"}]},
        {"name": "eth0", "ip-addresses": [{"ip-address-type": "ipv6", "ip-address": "fe80::1"},
                                          {"ip-address-type": "ipv4", "ip-address": "169.254.1.1"},
                                          {"ip-address-type": "ipv4", "ip-address": "10.0.0.7"}]},
    ]
    assert sshaccess.agent_addresses(interfaces) == ["10.0.0.7"]


def test_generations() -> None:
    firmware.validate_generation(1, False)
    firmware.validate_generation(2, True)
    with pytest.raises(InvalidInput):
        firmware.validate_generation(3, False)
    with pytest.raises(InvalidInput, match="--generation 2"):
        firmware.validate_generation(1, True)


def test_checkpoint_rule_names_r12_r14() -> None:
    check_checkpoint("l1", "taken", False, "x")
    with pytest.raises(PolicyError, match="R12-R14"):
        check_checkpoint("l1", "taken", True, "EFER.SVME set")
    with pytest.raises(StateError):
        check_checkpoint("l1", "applied", None, "unknown")


def test_debian_request_validation() -> None:
    ok = debian.validate(debian.DebianRequest(packages=("vim", "cloud-init", "vim")))
    assert ok.packages == ("vim",) and ok.image_name == "debian-bookworm"
    for bad in (debian.DebianRequest(release="sid-x"), debian.DebianRequest(packages=("vim;rm",)),
                debian.DebianRequest(size=1 << 30), debian.DebianRequest(size=3 << 40),
                debian.DebianRequest(name="nested-host")):
        with pytest.raises(InvalidInput):
            debian.validate(bad)
    a = debian.inputs_hash(debian.DebianRequest())
    assert a == debian.inputs_hash(debian.DebianRequest())
    assert a != debian.inputs_hash(debian.DebianRequest(packages=("vim",)))
    assert a != debian.inputs_hash(debian.DebianRequest(size=9 << 30))


def test_debian_disk_layout() -> None:
    argv = debian.partition_argv(Path("/x.raw"), 8 << 30)
    assert "--typecode=1:EF02" in argv and "--typecode=2:EF00" in argv
    end = debian.root_end(8 << 30)
    assert (end + 1) % 2048 == 0 and end < (8 << 30) // 512 - 33


def test_debian_fstab_esp_is_nofail_and_part_of_the_image_inputs() -> None:
    lines = [line.split("\t") for line in debian.fstab("1234-root", "ABCD1234").splitlines()]
    assert lines[0][:2] == ["UUID=1234-root", "/"] and "nofail" not in lines[0][3]
    assert lines[1][:2] == ["UUID=ABCD-1234", "/boot/efi"] and "nofail" in lines[1][3].split(",")
    assert debian.inputs(debian.DebianRequest())["fstab"] == debian.fstab("ROOT-UUID", "ESPID000")
