"""The API's disk-image resources end to end: disks, checkpoints, image import, the Debian build
operation and the VM's address, over `nestor serve` on a unix socket with real QEMU (TCG).

One Debian VM (generation 1, nesting on, an adapter on a NAT switch with DHCP in a network
namespace this test made) is booted once for the module and shared by its tests, in file order:
a systemd boot under TCG takes minutes. The finalizer ends the daemon, every QEMU and dnsmasq,
and deletes the namespace, also when a test fails.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from nestor.client import Client
from nestor.errors import InvalidInput, PolicyError, StateError
from nestor.net import dnsmasq
from nestor.service import NatSpec, SwitchSpec, SwitchType
from nestor.service.guest_types import GuestSpec
from nestor.service.types import no_progress
from tests.helpers import Daemon, guest_home, reap_home

pytestmark = [pytest.mark.vm, pytest.mark.timeout(2400)]

BOOT_TIMEOUT = 900  # TCG, systemd; a busy 2-core host has taken 5 min
IMAGE = "debian-bookworm"
MiB = 1 << 20
# Creates a KVM VM inside the guest and keeps it: the guest's KVM turns EFER.SVME on, which is what
# nestor observes under TCG as "a hypervisor runs inside" (the seed's R7 and R12-R14 trigger).
HYPERVISOR = ("import fcntl, os, time\n"
              "fd = os.open('/dev/kvm', os.O_RDWR)\n"
              "vm = fcntl.ioctl(fd, 0xAE01, 0)  # KVM_CREATE_VM\n"
              "time.sleep(3600)\n")


def sh(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class Api:
    home: Path
    netns: str
    subnet: str
    client: Client
    raw: httpx.Client


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, debian_store: Path) -> Iterator[Api]:
    home = guest_home(tmp_path_factory.mktemp("apiguests") / "home", debian_store)
    netns = f"nt-{secrets.token_hex(4)}"
    assert sh("ip", "netns", "add", netns).returncode == 0
    sh("ip", "-n", netns, "link", "set", "lo", "up")
    run = Path(tempfile.mkdtemp(prefix="nt-apig-", dir="/tmp"))
    daemon = Daemon(home, run / "api.sock", netns=netns)
    try:
        daemon.wait_ready()
        with Client(socket=daemon.socket, timeout=120) as client, \
                httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket)), base_url="http://nestor",
                             timeout=60) as raw:
            yield Api(home, netns, f"10.{80 + secrets.randbelow(40)}.{secrets.randbelow(250)}", client, raw)
    finally:
        daemon.stop()
        reap_home(home)
        for pidfile in (home / "net").glob("dnsmasq-*.pid"):
            dnsmasq.stop(pidfile)
        sh("ip", "netns", "del", netns)
        shutil.rmtree(run, ignore_errors=True)


def envelope(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"kind", "message", "hint", "rule", "resource"} and error["kind"] == kind, error
    assert error["message"] and error["hint"], error
    return error


def follow(raw: httpx.Client, response: httpx.Response, timeout: float = 600) -> dict[str, Any]:
    """A 202's operation, followed to its end."""
    assert response.status_code == 202, response.text
    op: dict[str, Any] = response.json()
    deadline = time.monotonic() + timeout
    while op["status"] in ("pending", "running"):
        assert time.monotonic() < deadline, op
        op = raw.get(op["url"], params={"wait": 30}, timeout=60).json()
    return op


def exec_ok(api: Api, *argv: str, timeout: float = 60) -> str:
    result = api.client.vm_exec("g1", list(argv), timeout=timeout)
    assert result.code == 0, (argv, result)
    return result.stdout.decode() if isinstance(result.stdout, bytes) else str(result.stdout)


def test_image_import_and_the_debian_build_operation(api: Api, tmp_path: Path) -> None:
    # A raw image is imported (an operation with progress) and stored as qcow2.
    uploads = api.home / "uploads"  # the files an API caller may name (issue 18)
    uploads.mkdir(exist_ok=True)
    raw_file = uploads / "small.raw"
    with open(raw_file, "wb") as f:
        f.truncate(32 * MiB)
    # Outside the files directory, a link, or a file that merely reads as raw: refused at once or by the operation.
    outside = tmp_path / "outside.raw"
    outside.write_bytes(raw_file.read_bytes())
    envelope(api.raw.post("/v1/images/store", json={"path": str(outside), "format": "raw"}), 403, "forbidden")
    (uploads / "shadow").symlink_to(uploads / "small.raw")
    op = follow(api.raw, api.raw.post("/v1/images/store", json={"path": str(uploads / "shadow"), "format": "raw"}))
    assert op["status"] == "failure" and "symbolic link" in op["error"]["message"], op
    op = follow(api.raw, api.raw.post("/v1/images/store", json={"path": str(raw_file), "name": "small"}))
    assert op["status"] == "failure" and "--format raw" in op["error"]["hint"], op
    op = follow(api.raw, api.raw.post("/v1/images/store", json={"path": str(raw_file), "name": "small", "format": "raw"}))
    assert op["status"] == "success", op
    assert any("qcow2" in line for line in op["progress"]), op["progress"]
    assert op["result"]["name"] == "small" and op["result"]["format"] == "qcow2"
    assert op["result"]["virtual_size"] == 32 * MiB and op["result"]["used_by"] == []
    assert {i.name for i in api.client.image_store_list()} >= {"small", IMAGE}
    # The same through the typed client; then removed.
    stored = api.client.image_import(raw_file, "small2", no_progress, fmt="raw")
    assert (stored.name, stored.virtual_size) == ("small2", 32 * MiB)
    api.client.image_remove("small2")
    assert "small2" not in {i.name for i in api.client.image_store_list()}
    # A qcow2 naming a backing file is refused by qemu-img's checks, and nothing is stored.
    backed = uploads / "backed.qcow2"
    assert sh("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(raw_file), str(backed)).returncode == 0
    op = follow(api.raw, api.raw.post("/v1/images/store", json={"path": str(backed), "name": "backed"}))
    assert op["status"] == "failure" and op["error"]["kind"] == "invalid_input", op
    assert "backing" in op["error"]["message"], op["error"]
    with pytest.raises(InvalidInput):
        api.client.image_import(backed, "backed", no_progress)
    assert "backed" not in {i.name for i in api.client.image_store_list()}
    # Bad input answers at once: 400 with the envelope, and no operation.
    envelope(api.raw.post("/v1/images/store", json={"path": "relative.raw"}), 400, "invalid_input")
    envelope(api.raw.post("/v1/images/store", json={"name": "x"}), 400, "invalid_input")
    envelope(api.raw.delete("/v1/images/store/nope"), 404, "not_found")

    # The Debian build with its parameters: bad ones refused before any work...
    for body in ({"release": "hamm"}, {"packages": ["Not A Package"]}, {"size": 1 << 20}, {"image_name": "../x"}):
        envelope(api.raw.post("/v1/images/debian/build", json=body), 400, "invalid_input")
    envelope(api.raw.post("/v1/images/appliance/build", json={"release": "bookworm"}), 400, "invalid_input")
    # ...and the cached image reused through the operation (the inputs hash matches).
    op = follow(api.raw, api.raw.post("/v1/images/debian/build", json={"release": "bookworm"}))
    assert op["status"] == "success" and op["result"]["name"] == IMAGE, op
    assert any("cached" in line for line in op["progress"]), op["progress"]


def test_disk_image_vm_disks_and_checkpoints_while_off(api: Api) -> None:
    c = api.client
    c.switch_new(SwitchSpec("natsw", SwitchType.INTERNAL))
    c.switch_set_ip("natsw", f"{api.subnet}.1/24")
    c.nat_new(NatSpec("lan", "natsw", f"{api.subnet}.0/24", dhcp=True))
    made = c.vm_new_guest("g1", GuestSpec(image=IMAGE, no_ssh_key=True, hostname="apiguest", switches=("natsw",)),
                          memory=1024 * MiB, nested=True)
    assert made.vm.name == "g1" and made.vm.nested
    # Guest fields for a VM on a libvirt host or the appliance are refused (400, nothing made); a
    # kernel outside the files directory is refused first, as any path there is (403).
    envelope(api.raw.post("/v1/vms", json={"name": "g2", "image": IMAGE, "kernel": "/x"}), 403, "forbidden")
    envelope(api.raw.post("/v1/vms", json={"name": "g2", "image": IMAGE, "generation": 3}), 400, "invalid_input")
    assert "g2" not in {v.name for v in c.vm_list()}

    (root,) = c.vm_disk_list("g1")
    assert (root.name, root.image) == ("root", IMAGE)
    data = c.vm_disk_add("g1", "data", 64 * MiB)
    assert (data.name, data.virtual_size) == ("data", 64 * MiB)
    grown = c.vm_disk_resize("g1", "data", 96 * MiB)
    assert (grown.disk.virtual_size, grown.online) == (96 * MiB, False)
    assert [d.name for d in c.vm_disk_list("g1")] == ["root", "data"]
    # Bad input: the envelope, nothing changed.
    error = envelope(api.raw.patch("/v1/vms/g1/disks/data", json={"size": 32 * MiB}), 400, "invalid_input")
    assert "only grow" in error["message"]
    envelope(api.raw.post("/v1/vms/g1/disks", json={"name": "data", "size": 64 * MiB}), 409, "conflict")
    envelope(api.raw.post("/v1/vms/g1/disks", json={"name": "x", "size": 0}), 400, "invalid_input")
    envelope(api.raw.post("/v1/vms/g1/disks", json={"name": "x"}), 400, "invalid_input")
    envelope(api.raw.post("/v1/vms/g1/disks", json={"name": "x", "size": MiB, "bus": "ide"}), 400, "invalid_input")
    envelope(api.raw.delete("/v1/vms/g1/disks/root"), 400, "invalid_input")
    envelope(api.raw.get("/v1/vms/nope/disks"), 404, "not_found")
    assert c.vm_disk_list("g1")[1].virtual_size == 96 * MiB

    # A checkpoint of the stopped VM: its disks only, applied to the stopped VM.
    result = c.vm_checkpoint_new("g1", "cold")
    assert (result.vm, result.checkpoint) == ("g1", "cold")
    (cold,) = c.vm_checkpoint_list("g1")
    assert (cold.name, cold.memory, cold.memory_size) == ("cold", False, 0)
    assert c.vm_checkpoint_apply("g1", "cold").checkpoint == "cold"
    envelope(api.raw.post("/v1/vms/g1/checkpoints", json={"name": "cold"}), 409, "conflict")
    envelope(api.raw.post("/v1/vms/g1/checkpoints", json={"name": "../x"}), 400, "invalid_input")
    envelope(api.raw.post("/v1/vms/g1/checkpoints/nope/apply"), 404, "not_found")
    envelope(api.raw.delete("/v1/vms/g1/checkpoints/nope"), 404, "not_found")
    envelope(api.raw.get("/v1/vms/g1/address"), 409, "wrong_state")  # off: nowhere to reach


@pytest.fixture(scope="module")
def booted(api: Api) -> float:
    started = time.monotonic()
    api.client.vm_start("g1")
    deadline = started + BOOT_TIMEOUT
    while True:
        try:
            if api.client.vm_exec("g1", ["true"], timeout=20).code == 0:
                break
        except Exception as exc:  # the agent is not up yet
            assert time.monotonic() < deadline, f"g1's guest agent never answered in {BOOT_TIMEOUT} s: {exc}"
        time.sleep(3)
    boot = time.monotonic() - started
    print(f"[measure] g1 (API) boot to guest agent: {boot:.1f} s", file=sys.stderr)
    return boot


def test_online_resize_checkpoint_with_memory_and_address(api: Api, booted: float) -> None:
    c = api.client
    # Running: a disk-only checkpoint is refused at once (409 with its hint), as are disk changes.
    error = envelope(api.raw.post("/v1/vms/g1/checkpoints/cold/apply"), 409, "wrong_state")
    assert "nestor vm stop g1" in error["hint"]
    envelope(api.raw.post("/v1/vms/g1/disks", json={"name": "late", "size": 64 * MiB}), 409, "wrong_state")
    # Online resize: QMP block_resize, and the guest's virtio-blk sees the new size.
    grown = c.vm_disk_resize("g1", "data", 160 * MiB)
    assert (grown.online, grown.disk.virtual_size) == (True, 160 * MiB)
    deadline = time.monotonic() + 30
    while int(exec_ok(api, "cat", "/sys/block/vdb/size").strip()) * 512 != 160 * MiB:
        assert time.monotonic() < deadline, "the guest never saw the grown disk"
        time.sleep(1)

    # A checkpoint with memory: a file's earlier content comes back when it is applied.
    exec_ok(api, "sh", "-c", "echo before > /root/api-cp.txt && sync")
    made = c.vm_checkpoint_new("g1", "warm")
    assert made.seconds >= 0
    warm = next(cp for cp in c.vm_checkpoint_list("g1") if cp.name == "warm")
    assert warm.memory and warm.memory_size > 0
    exec_ok(api, "sh", "-c", "echo after > /root/api-cp.txt && sync")
    assert exec_ok(api, "cat", "/root/api-cp.txt").strip() == "after"
    c.vm_checkpoint_apply("g1", "warm")
    deadline = time.monotonic() + 60
    while True:
        try:
            content = exec_ok(api, "cat", "/root/api-cp.txt", timeout=20).strip()
            break
        except Exception:  # the agent resynchronises after the guest jumped back in time
            assert time.monotonic() < deadline
            time.sleep(1)
    assert content == "before"

    # The address `vm ssh` uses: the DHCP lease on the NAT switch (the guest asks for one at boot).
    deadline = time.monotonic() + 120
    while (response := api.raw.get("/v1/vms/g1/address")).status_code != 200:
        assert time.monotonic() < deadline, response.text
        envelope(response, 404, "not_found")
        time.sleep(2)
    address = c.vm_address("g1")
    assert address.vm == "g1" and address.how in ("dhcp lease", "guest agent"), address
    assert address.address.startswith(f"{api.subnet}."), address
    assert address.netns == api.netns and address.user == "debian"
    assert address.how == "dhcp lease", address  # dnsmasq's lease comes first


def test_checkpoints_refused_while_a_hypervisor_runs_inside(api: Api, booted: float) -> None:
    c = api.client
    exec_ok(api, "modprobe", "kvm_amd")
    exec_ok(api, "systemd-run", "--unit=nt-hv", "python3", "-c", HYPERVISOR)
    deadline = time.monotonic() + 60
    while not c.vm_show("g1").hypervisor_running:
        assert time.monotonic() < deadline, "nestor never saw the guest's hypervisor"
        time.sleep(1)
    # R12-R14: refused at once with the rule (422), no operation made; the typed client raises it.
    before = len(c.operations())
    error = envelope(api.raw.post("/v1/vms/g1/checkpoints", json={"name": "hot"}), 422, "policy")
    assert error["rule"] == "R12-R14" and "hypervisor is running inside" in error["message"], error
    error = envelope(api.raw.post("/v1/vms/g1/checkpoints/warm/apply"), 422, "policy")
    assert error["rule"] == "R12-R14", error
    assert len(c.operations()) == before
    with pytest.raises(PolicyError) as refused:
        c.vm_checkpoint_new("g1", "hot")
    assert refused.value.rule == "R12-R14"
    assert "hot" not in {cp.name for cp in c.vm_checkpoint_list("g1")}
    # The hypervisor gone, checkpoints work again.
    exec_ok(api, "systemctl", "stop", "nt-hv")
    deadline = time.monotonic() + 60
    while c.vm_show("g1").hypervisor_running:
        assert time.monotonic() < deadline, "the guest's hypervisor never went away"
        time.sleep(1)
    assert c.vm_checkpoint_new("g1", "calm").checkpoint == "calm"


def test_remove_disks_and_checkpoints(api: Api, booted: float) -> None:
    c = api.client
    with pytest.raises(StateError):
        c.vm_disk_remove("g1", "data")  # running
    c.vm_stop("g1", turn_off=True)
    c.vm_disk_remove("g1", "data")
    assert [d.name for d in c.vm_disk_list("g1")] == ["root"]
    for name in ("warm", "calm", "cold"):
        c.vm_checkpoint_remove("g1", name)
    assert c.vm_checkpoint_list("g1") == []
    envelope(api.raw.delete("/v1/vms/g1/disks/data"), 404, "not_found")
    assert IMAGE in {i.name for i in c.image_store_list()}
    assert "g1" in next(i.used_by for i in c.image_store_list() if i.name == IMAGE)
    envelope(api.raw.delete(f"/v1/images/store/{IMAGE}"), 409, "conflict")
