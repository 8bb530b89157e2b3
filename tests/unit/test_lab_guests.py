"""Labs (issue 17): a VM of a stored disk image (debian-…) is a disk-image guest, made through
`vm_new_request` with its cloud-init (the file's `ssh_keys`, or its `cloud_init` user-data) written
at its level; the built-in images refuse both keys (tests/unit/lab_fake.py's levels)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nestor import cloudinit
from nestor.errors import InvalidInput
from nestor.images import store
from nestor.lab import file as lab_file
from nestor.lab import spec
from nestor.lab.owners import Owners
from nestor.lab.plan import plan
from nestor.lab.survey import survey
from nestor.lab.up import Up
from tests.unit.lab_fake import FakeLevels

KEY1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxFkZ3f0m7q8bT2m9yq1dK3H3sXq0x9vG6u3wVb8pQe one@host"
KEY2 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 two@host"

GUESTS = f"""
name: guests
switches:
  lan: {{type: internal, address: 10.84.0.1/24}}
nats:
  lan: {{switch: lan, prefix: 10.84.0.0/24, dhcp: true}}
vms:
  deb:
    image: debian-bookworm
    cpus: 2
    memory: 1G
    nested: true
    adapters: [{{switch: lan, dhcp: true}}, {{switch: lan, mac_spoofing: true}}]
    dynamic_memory: {{minimum: 512M, maximum: 2G}}
    ssh_keys:
      - {KEY1}
      - "{KEY2}  "
  own:
    image: debian-libvirt
    adapters: [{{switch: lan}}]
    cloud_init: |
      #cloud-config
      users: [{{name: ops}}]
  plain:
    image: debian-bookworm
  hv:
    image: nested-host
    nested: true
    memory: 1G
    adapters: [{{switch: lan}}]
    vms:
      inner:
        image: debian-bookworm
        memory: 256M
        ssh_keys: [{KEY1}]
"""


def _up(tmp_path: Path, text: str, levels: FakeLevels) -> Up:
    lab = lab_file.parse(text)
    owners = Owners(tmp_path / "nestor.db")
    owners.save(lab.name, None, None, text)
    runner = Up(lab, levels, owners, lambda line: None)  # type: ignore[arg-type]
    runner.run()
    return runner


def test_the_lab_knows_the_built_in_images_as_the_store_does() -> None:
    assert spec.BUILT_IN == store.BUILT_IN


def test_the_file_reads_keys_and_user_data() -> None:
    lab = lab_file.parse(GUESTS)
    deb, own = lab.root.vms["deb"], lab.root.vms["own"]
    assert deb.disk_guest and own.disk_guest and not lab.root.vms["hv"].disk_guest
    assert deb.ssh_keys == (KEY1, KEY2 + "  ") and deb.cloud_init is None
    assert own.cloud_init is not None and own.cloud_init.startswith("#cloud-config\n") and own.ssh_keys == ()


def test_up_makes_disk_image_guests_with_their_keys_and_user_data(tmp_path: Path) -> None:
    levels = FakeLevels(tmp_path)
    runner = _up(tmp_path, GUESTS, levels)
    assert runner.outcome.failed == []
    l0, l1 = levels.levels[""], levels.levels["hv"]
    # each disk-image guest: vm_new_request, no adapter of its own (no default switch), the file's
    # adapters, guard and dynamic memory as for any VM, then started
    assert l0.calls[l0.calls.index("vm_new_guest deb"):][:5] == [
        "vm_new_guest deb", "adapter_add deb lan", "adapter_add deb lan", "adapter_set deb net1", "vm_set_memory deb"]
    assert "vm_new hv" in l0.calls and "vm_new_guest hv" not in l0.calls
    assert {n for n, v in l0.vms.items() if v.state.value == "running"} == {"deb", "own", "plain", "hv"}
    assert l0.vms["deb"].image == "debian-bookworm" and l0.vms["deb"].nested and l0.vms["deb"].vcpus == 2
    deb = l0.guests["deb"]
    keys = tmp_path / "labs" / "guests" / "deb.keys.pub"
    assert deb.ssh_key == keys and deb.cloud_init is None and deb.no_network and not deb.no_ssh_key
    assert levels.files[("", str(keys))] == f"{KEY1}\n{KEY2}\n"  # every key, one a line
    own = l0.guests["own"]
    user_data = tmp_path / "labs" / "guests" / "own.user-data"
    assert own.cloud_init == user_data and own.ssh_key is None and own.no_network
    assert levels.files[("", str(user_data))] == "#cloud-config\nusers: [{name: ops}]\n"
    plain = l0.guests["plain"]  # neither: the level's default key, as `vm new --image`
    assert (plain.ssh_key, plain.cloud_init, plain.no_ssh_key, plain.no_network) == (None, None, False, True)
    # below L0 the files go into the level's files directory, the only place an API caller may name
    inner = l1.guests["inner"]
    assert inner.ssh_key == Path("/var/lib/nestor/uploads/labs/guests/inner.keys.pub")
    assert levels.files[("hv", "/var/lib/nestor/uploads/labs/guests/inner.keys.pub")] == f"{KEY1}\n"
    # a second run: nothing to do (the plan compares the image, as for any VM)
    lab = lab_file.parse(GUESTS)
    owners = Owners(tmp_path / "nestor.db")
    assert plan(lab, survey(lab, levels), owners.objects("guests")).changes == []  # type: ignore[arg-type]


def test_keys_and_user_data_apply_to_a_new_vm_only(tmp_path: Path) -> None:
    """cloud-init applies them once, at the guest's first boot: a change on a VM that exists is not
    planned (the level does not report them); an image change replaces the VM, with the new ones."""
    levels = FakeLevels(tmp_path)
    _up(tmp_path, GUESTS, levels)
    changed = GUESTS.replace(f"      - {KEY1}\n", "")
    lab = lab_file.parse(changed)
    owners = Owners(tmp_path / "nestor.db")
    assert plan(lab, survey(lab, levels), owners.objects("guests")).changes == []  # type: ignore[arg-type]
    replaced = changed.replace("  deb:\n    image: debian-bookworm", "  deb:\n    image: debian-trixie")
    runner = _up(tmp_path, replaced, levels)
    assert ("vm", "deb", "replace") in {(a.kind, a.name, a.op.value) for a in runner.outcome.done}
    assert levels.files[("", str(tmp_path / "labs" / "guests" / "deb.keys.pub"))] == f"{KEY2}\n"


def test_a_level_reads_every_key_of_a_keys_file(tmp_path: Path) -> None:
    """What the level does with the file (service/diskvms.seed_spec): every key line is authorized."""
    keys = tmp_path / "k.pub"
    keys.write_text(f"{KEY1}\n# a comment\n\n{KEY2}\n")
    assert cloudinit.read_public_keys(keys) == (KEY1, KEY2)
    assert cloudinit.read_public_key(keys) == KEY1


@pytest.mark.parametrize(("vm", "message", "hint"), [
    (f"{{image: appliance, ssh_keys: [{KEY1}]}}", "vms.a.ssh_keys: the appliance image does not read cloud-init",
     "debian-bookworm"),
    (f"{{ssh_keys: [{KEY1}]}}", "vms.a.ssh_keys: the appliance image", "drop ssh_keys:"),
    (f"{{image: nested-host, ssh_keys: [{KEY1}]}}", "vms.a.ssh_keys: the nested-host image", "vm exec"),
    ("{image: nested-host, cloud_init: '#cloud-config'}", "vms.a.cloud_init: the nested-host image", "drop cloud_init:"),
    ("{image: debian-bookworm, ssh_keys: [not-a-key]}", "vms.a.ssh_keys.0: 'not-a-key' is not an OpenSSH public key",
     "ssh-ed25519"),
    ("{image: debian-bookworm, ssh_keys: ['-----BEGIN OPENSSH PRIVATE KEY-----']}", "vms.a.ssh_keys.0: this is a private key",
     ".pub"),
    ("{image: debian-bookworm, ssh_keys: [\"" + KEY1 + "\\n" + KEY2 + "\"]}", "vms.a.ssh_keys.0:", None),
    ("{image: debian-bookworm, ssh_keys: [1]}", "vms.a.ssh_keys.0: '1' is not a string", None),
    ("{image: debian-bookworm, ssh_keys: " + KEY1 + "}", "vms.a.ssh_keys:", None),
    (f"{{image: debian-bookworm, ssh_keys: [{KEY1}], cloud_init: '#cloud-config'}}",
     "vms.a.cloud_init: cloud_init excludes ssh_keys", "ssh_authorized_keys"),
    ("{image: debian-bookworm, cloud_init: 'users: []'}", "vms.a.cloud_init: user-data does not start with #cloud-config",
     "#cloud-config"),
    ("{image: debian-bookworm, cloud_init: [a]}", "vms.a.cloud_init:", None),
    ("{image: debian-bookworm, cloud_nit: '#cloud-config'}", "vms.a: unknown key 'cloud_nit'", "did you mean 'cloud_init'?"),
    ("{image: debian-bookworm, ssh_key: []}", "vms.a: unknown key 'ssh_key'", "did you mean 'ssh_keys'?"),
    ("{image: debian-bookworm, host: auto}", "vms.a.host: a disk-image guest (debian-bookworm)", "drop host:"),
    ("{image: debian-bookworm, adapters: [{switch: s, ip: 10.0.0.5/24}]}", "vms.a.adapters.0.ip: a static address",
     "dhcp: true"),
    ("{image: debian-bookworm, run: 'echo'}", "vms.a.run: a run script is for the appliance image", None),
])
def test_bad_guest_keys_are_one_line_errors_naming_the_key(vm: str, message: str, hint: str | None) -> None:
    text = f"name: x\nswitches:\n  s: {{type: internal, address: 10.0.0.1/24}}\nvms:\n  a: {vm}\n"
    with pytest.raises(InvalidInput) as caught:
        lab_file.parse(text)
    assert message in caught.value.message, caught.value.message
    assert "\n" not in caught.value.message
    if hint is not None:
        assert caught.value.hint is not None and hint in caught.value.hint, caught.value.hint
