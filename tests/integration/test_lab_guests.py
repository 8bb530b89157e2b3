"""Labs (issue 17) with a disk-image guest on real QEMU under TCG: a lab file's `image: debian-bookworm`
VM with two `ssh_keys` (key pairs this test made) on an internal switch with NAT and DHCP, all in a
network namespace this test made; `lab up` makes it through `vm_new_request` with the keys as its
cloud-init user's authorized keys; `nestor vm ssh -i KEY` runs a command in it with either key;
a second VM's `cloud_init` user-data is what cloud-init ran (a file it wrote, read back through the
guest agent); `lab up` again changes nothing; `lab down` removes both. The Debian image is the cached one that
tests/integration/test_guests.py boots (the `debian_store` fixture)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import CACHE, guest_home, nestor, reap_home
from tests.integration import libvirt_l1
from tests.integration.test_guests import BOOT_TIMEOUT
from tests.integration.test_network import NewNetns, netns_maker, subnet

pytestmark = pytest.mark.vm
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "labs"


@pytest.fixture
def dhome(tmp_path: Path, debian_store: Path) -> Iterator[Path]:
    root = guest_home(tmp_path / "home", debian_store)
    try:
        yield root
    finally:
        reap_home(root)


@pytest.fixture
def libvirt_home(tmp_path: Path) -> Iterator[Path]:
    """A home with the debian-libvirt image (built once into the test cache: tests/integration/libvirt_l1.py)."""
    import os
    import shutil

    if os.geteuid() != 0 or shutil.which("qemu-system-x86_64") is None:
        pytest.skip("VM tests need root and qemu-system-x86 (scripts/setup installs it)")
    libvirt_l1.build_image(CACHE / "images")
    root = guest_home(tmp_path / "lhome", CACHE / "images")
    try:
        yield root
    finally:
        reap_home(root)


@pytest.fixture
def netns(request: pytest.FixtureRequest) -> Iterator[NewNetns]:
    """Namespaces for the home of the test (dhome, or libvirt_home)."""
    home = request.getfixturevalue("libvirt_home" if "libvirt_home" in request.fixturenames else "dhome")
    yield from netns_maker(home)


def keypair(top: Path, name: str) -> Path:
    made = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"lab-{name}", "-f", str(top / name)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert made.returncode == 0, made.stderr
    return top / name


@pytest.mark.timeout(BOOT_TIMEOUT + 900)  # a loaded 2-core host: boot, then up, down
def test_a_debian_lab_vm_takes_the_files_ssh_keys(dhome: Path, netns: NewNetns, tmp_path: Path) -> None:
    ns, net = netns(), subnet()
    one, two = keypair(tmp_path, "one"), keypair(tmp_path, "two")
    lab = tmp_path / "deb.lab.yaml"
    lab.write_text(f"""\
name: deb
switches:
  lan: {{type: internal, address: 10.{net}.0.1/24}}
nats:
  lan: {{switch: lan, prefix: 10.{net}.0.0/24, dhcp: true}}
vms:
  deb:
    image: debian-bookworm
    memory: 1G
    adapters: [{{switch: lan}}]
    ssh_keys:
      - {one.with_suffix(".pub").read_text().strip()}
      - {two.with_suffix(".pub").read_text().strip()}
  own:
    image: debian-bookworm
    memory: 512M
    adapters: [{{switch: lan}}]
    cloud_init: |
      #cloud-config
      write_files:
        - {{path: /etc/lab-marker, content: "user-data of the lab file"}}
""")
    planned = json.loads(nestor(dhome, "lab", "plan", str(lab), "-o", "json", netns=ns).stdout)
    assert {(a["kind"], a["name"]): a["op"] for a in planned["actions"]} == {
        ("switch", "lan"): "create", ("nat", "lan"): "create", ("vm", "deb"): "create", ("vm", "own"): "create"}
    up = nestor(dhome, "lab", "up", str(lab), netns=ns, timeout=600)
    assert "4 changes made" in up.stdout, up.stdout + up.stderr
    shown = json.loads(nestor(dhome, "vm", "show", "deb", "-o", "json").stdout)
    assert shown["image"] == "debian-bookworm" and shown["state"] == "running"
    adapters = json.loads(nestor(dhome, "adapter", "list", "deb", "-o", "json").stdout)
    assert [a["switch"] for a in adapters] == ["lan"]  # the file's adapter only (no default switch)

    started = time.monotonic()
    deadline = started + BOOT_TIMEOUT
    while True:
        result = nestor(dhome, "vm", "ssh", "-i", str(one), "deb", "--", "id -un; hostname", netns=ns,
                        check=False, timeout=120)
        if result.returncode == 0:
            break
        assert time.monotonic() < deadline, f"no ssh after {BOOT_TIMEOUT} s: {result.stderr[-500:]}"
        time.sleep(5)
    print(f"[measure] lab deb: boot to ssh {time.monotonic() - started:.1f} s", file=sys.stderr)
    assert result.stdout.split() == ["debian", "deb"]  # cloud-init's default user, the VM's name as hostname
    second = nestor(dhome, "vm", "ssh", "-i", str(two), "deb", "--", "cat ~/.ssh/authorized_keys", netns=ns,
                    timeout=120)
    assert "lab-one" in second.stdout and "lab-two" in second.stdout  # both keys of the file
    # own: the file's user-data instead of the default user and keys (read through the guest agent)
    while True:
        marker = nestor(dhome, "vm", "exec", "own", "cat", "/etc/lab-marker", netns=ns, check=False, timeout=120)
        if marker.returncode == 0:
            break
        assert time.monotonic() < deadline, f"no /etc/lab-marker in own: {marker.stdout[-300:]}{marker.stderr[-300:]}"
        time.sleep(5)
    assert marker.stdout == "user-data of the lab file"
    stranger = keypair(tmp_path, "three")
    refused = nestor(dhome, "vm", "ssh", "-i", str(stranger), "deb", "--", "true", netns=ns, check=False, timeout=120)
    assert refused.returncode != 0  # a key that is not the file's does not log in

    again = nestor(dhome, "lab", "up", str(lab), netns=ns, timeout=300)
    assert "nothing to do" in again.stdout, again.stdout + again.stderr
    down = nestor(dhome, "lab", "down", "deb", timeout=300)
    assert down.returncode == 0, down.stderr
    assert json.loads(nestor(dhome, "vm", "list", "-o", "json").stdout) == []
    assert json.loads(nestor(dhome, "switch", "list", "-o", "json", netns=ns).stdout) == []


@pytest.mark.ondemand
@pytest.mark.nested
@pytest.mark.timeout(libvirt_l1.BOOT_TIMEOUT + 900)
def test_the_libvirt_cluster_example_comes_up(tmp_path: Path, netns: NewNetns, libvirt_home: Path) -> None:
    """examples/labs/libvirt-cluster.yaml, on demand (`pytest -m ondemand tests/integration/test_lab_guests.py`):
    two Debian L1s of the debian-libvirt image with nesting on, made by `lab up` with this test's key
    added as `ssh_keys`; in each, libvirtd runs and KVM is there (/dev/kvm: the nesting L0 gave it).
    Two TCG L1s of 2 GiB with systemd and libvirtd: many minutes on a 2-core machine."""
    import yaml

    from nestor.host import facts
    from nestor.policy import accel

    chosen = accel.choose(facts.probe())
    if not chosen.nesting_available:
        pytest.skip(f"this host cannot offer nested virtualization: {chosen.nesting_reason}")
    ns = netns()
    key = keypair(tmp_path, "cluster")
    data = yaml.safe_load(EXAMPLES.joinpath("libvirt-cluster.yaml").read_text())
    for vm in data["vms"].values():
        vm["ssh_keys"] = [key.with_suffix(".pub").read_text().strip()]
    lab = tmp_path / "cluster.yaml"
    lab.write_text(yaml.safe_dump(data))
    up = nestor(libvirt_home, "lab", "up", str(lab), netns=ns, timeout=900)
    assert "4 changes made" in up.stdout, up.stdout + up.stderr
    started = time.monotonic()
    for name in ("a", "b"):
        while True:
            result = nestor(libvirt_home, "vm", "ssh", "-i", str(key), name, "--",
                            "systemctl is-active libvirtd && test -c /dev/kvm && sudo -n virsh -c qemu:///system list --name",
                            netns=ns, check=False, timeout=180)
            if result.returncode == 0:
                break
            assert time.monotonic() < started + libvirt_l1.BOOT_TIMEOUT, f"{name}: {result.stdout[-300:]}{result.stderr[-300:]}"
            time.sleep(10)
        assert result.stdout.split()[0] == "active", result.stdout
        print(f"[measure] cluster lab {name}: libvirtd ready after {time.monotonic() - started:.1f} s", file=sys.stderr)
    again = nestor(libvirt_home, "lab", "up", str(lab), netns=ns, timeout=300)
    assert "nothing to do" in again.stdout, again.stdout + again.stderr
    nestor(libvirt_home, "lab", "down", "cluster", timeout=300)
    assert json.loads(nestor(libvirt_home, "vm", "list", "-o", "json").stdout) == []
