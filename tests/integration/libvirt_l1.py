"""A nestor L1 from a Debian image with libvirt inside: shared by the libvirt-in-L1 test (one L1,
CI) and the cluster-in-a-box benchmark (two L1s, on demand).

- The image: `image build debian --packages qemu-system-x86,libvirt-daemon-system,libvirt-clients`.
- The L2 is tiny and comes in through cloud-init (no network in the guest): a static C program
  (data/l2init.c) as /init of a 300 KB initramfs, booted with the L1's own Debian kernel.
- libvirtd listens for qemu+tcp with auth none on the L1's address on the test's internal
  switch only (docs/decisions.md); the switch lives in the test's network namespace.

Every helper runs the real CLI; nothing here fakes QEMU, libvirt or the network.
"""

from __future__ import annotations

import base64
import gzip
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nestor.images import debian
from nestor.images.cpio import NewcWriter

IMAGE = "debian-libvirt"
PACKAGES = ("qemu-system-x86", "libvirt-daemon-system", "libvirt-clients")
READY_LINE = "nestor-test: libvirt in L1 ready"
L2_DIR = "/var/lib/nestor-l2"
L2_KERNEL = f"{L2_DIR}/vmlinuz"
L2_INITRD = f"{L2_DIR}/initrd.gz"
L2_INITRD_KVM = f"{L2_DIR}/initrd-kvm.img"  # the same plus the L1 kernel's KVM modules (l2init's "kvm")
L2_UP = "nestor-l2: up, hypervisor"
BOOT_TIMEOUT = 2400  # TCG: SeaBIOS, GRUB, systemd, cloud-init, libvirtd; 15+ min seen on a loaded 2-core host


def request() -> debian.DebianRequest:
    return debian.validate(debian.DebianRequest(packages=PACKAGES, name=IMAGE))


def build_image(images: Path) -> None:
    images.mkdir(parents=True, exist_ok=True)
    debian.build_debian(images, request(), lambda line: print(f"[image] {line}", file=sys.stderr))


def l2_initramfs(work: Path) -> bytes:
    """The L2's initramfs (gzip'd newc): data/l2init.c built static, as /init, plus /dev/console."""
    binary = work / "l2init"
    subprocess.run(["gcc", "-static", "-Os", "-s", "-o", str(binary), str(Path(__file__).parent / "data" / "l2init.c")],
                   check=True, capture_output=True, timeout=120)
    archive = NewcWriter()
    archive.directory("dev")
    archive.chardev("dev/console", 5, 1)
    archive.file("init", binary.read_bytes(), 0o755)
    return pad4(gzip.compress(archive.finish(), 9, mtime=0))


def pad4(initrd: bytes) -> bytes:
    """Zeros to a multiple of 4 bytes: the kernel takes a newc archive appended after a compressed
    one (L2_INITRD_KVM) only at a 4-aligned offset; at any other it stops with "Initramfs
    unpacking failed: invalid magic at start of compressed archive" (init/initramfs.c), and the
    L2's /mods were missing (the cluster run's L3 that never started)."""
    return initrd + b"\0" * (-len(initrd) % 4)


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)


def prepared_images() -> Path:
    """Skips (with the reason) where these tests cannot run; else the image cache with the
    libvirt Debian image built."""
    import os

    import pytest

    from nestor.host import facts
    from nestor.policy import accel
    from tests.helpers import CACHE

    if os.geteuid() != 0 or shutil.which("qemu-system-x86_64") is None:
        pytest.skip("VM tests need root and qemu-system-x86 (scripts/setup installs it)")
    if not has_gcc():
        pytest.skip("needs gcc and libc6-dev for the L2's /init (scripts/setup installs them)")
    chosen = accel.choose(facts.probe())
    if not chosen.nesting_available:
        pytest.skip(f"this host cannot offer nested virtualization: {chosen.nesting_reason}")
    images = CACHE / "images"
    build_image(images)
    return images


def has_gcc() -> bool:
    return shutil.which("gcc") is not None


def l2_domain_xml(name: str, count: bool = True) -> str:
    """An L2 for `virsh define` inside the L1: KVM, direct kernel boot, the serial into a file.

    `<features><acpi/>` is needed: without it libvirt starts QEMU with `-no-acpi`, and the Debian
    cloud kernel then finds no RSDP ("ACPI BIOS Error (bug): A valid RSDP was not found") and spins
    before init, silent on its console (seen: 100% of a vCPU for 900 s, the domain "running (booted)").
    """
    return f"""<domain type='kvm'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{L2_KERNEL}</kernel>
    <initrd>{L2_INITRD}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1{' count' if count else ''}</cmdline>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <devices>
    <serial type='file'>
      <source path='/var/log/libvirt/qemu/{name}-serial.log'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""


# Run by python3 in the L1 (cloud-init's own interpreter): append a newc archive with the running
# kernel's KVM modules to the L2's initramfs (the kernel unpacks concatenated archives in turn).
MODULES_SCRIPT = r"""
import os, sys
release = os.uname().release
base = f"/lib/modules/{release}/kernel/"
names = ["virt/lib/irqbypass.ko", "arch/x86/kvm/kvm.ko", "arch/x86/kvm/kvm-amd.ko"]
out, ino = bytearray(), 1
def entry(name, mode, data=b""):
    global ino
    raw = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0)
    ino += 1
    for blob in (b"070701" + b"".join(b"%08X" % f for f in fields) + raw, data):
        out.extend(blob + b"\0" * (-len(blob) % 4))
entry("mods", 0o040755)
for name in names:
    entry("mods/" + os.path.basename(name), 0o100644, open(base + name, "rb").read())
entry("TRAILER!!!", 0)
out.extend(b"\0" * (-len(out) % 512))
with open(sys.argv[2], "wb") as f:
    f.write(open(sys.argv[1], "rb").read() + bytes(out))
"""


def user_data(address: str, initrd: bytes, l2_names: tuple[str, ...] = ("l2a",)) -> str:
    """#cloud-config for the L1: the L2's files, libvirtd on qemu+tcp (auth none) bound to the
    L1's switch address only, its own host UUID, migrations addressed to the switch address."""
    files = [
        {"path": L2_INITRD, "encoding": "b64", "content": base64.b64encode(initrd).decode(), "permissions": "0644"},
        # libvirtd runs socket-activated (Debian 12): the TCP socket is a systemd unit; bind it to
        # the switch address (FreeBind: before the address is up) instead of every address.
        {"path": "/etc/systemd/system/libvirtd-tcp.socket.d/nestor.conf",
         "content": f"[Socket]\nListenStream=\nListenStream={address}:16509\nFreeBind=yes\n"},
        {"path": "/etc/libvirt/libvirtd.conf", "append": True,
         "content": f'auth_tcp = "none"\nhost_uuid = "{uuid.uuid4()}"\n'},
        {"path": "/etc/libvirt/qemu.conf", "append": True,
         "content": f'migration_host = "{address}"\nmigration_address = "{address}"\n'},
    ]
    files.append({"path": f"{L2_DIR}/mods.py", "content": MODULES_SCRIPT})
    files += [{"path": f"{L2_DIR}/{name}.xml", "content": l2_domain_xml(name)} for name in l2_names]
    doc = {
        "write_files": files,
        "runcmd": [
            ["sh", "-c", f"cp /boot/vmlinuz-* {L2_KERNEL} && chmod 0644 {L2_KERNEL}"],
            ["python3", f"{L2_DIR}/mods.py", L2_INITRD, L2_INITRD_KVM],
            ["chmod", "0644", L2_INITRD_KVM],
            ["systemctl", "daemon-reload"],
            ["systemctl", "stop", "libvirtd.service"],
            ["systemctl", "enable", "--now", "libvirtd-tcp.socket"],
            ["systemctl", "start", "libvirtd.service"],
            ["sh", "-c", f"echo '{READY_LINE}' > /dev/ttyS0"],
        ],
    }
    return "#cloud-config\n" + json.dumps(doc, indent=1) + "\n"


def nestor_in(netns: str, home: Path, *args: str, timeout: float = 180,
              check: bool = True) -> subprocess.CompletedProcess[str]:
    """The CLI run inside the test's namespace (libvirt connections to the L1s start there)."""
    argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "nestor", "--home", str(home), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"nestor {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


def new_l1(run: Callable[..., Any], name: str, address: str, gateway: str, seed: Path, memory: str = "2G") -> None:
    """Define (not start) an L1 from the libvirt image on switch 'sw' with a static address;
    `run` is tests.helpers.nestor bound to a home and the test's namespace."""
    run("vm", "new", name, "--image", IMAGE, "--nested", "--memory", memory, "--vcpus", "2",
        "--switch", "sw", "--cloud-init", str(seed), "--hostname", name)
    run("adapter", "set", name, "--ip", f"{address}/24", "--gateway", gateway)


def wait_until(what: str, probe: Callable[[], Any], timeout: float, interval: float = 2.0) -> Any:
    """Poll probe() until it returns a truthy value; fail naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not after {timeout} s (last: {last!r})")


# cloud-config keys that only shorten the L1's first boot under TCG (cloud-init analyze blame,
# 2026-11-27, load ~7): ssh host keys of every type 22 s (RSA 3072 above all), printing them to
# the console 9.5 s, grub-dpkg 5.5 s. The tests use neither ssh nor GRUB's debconf answers.
LEAN_CLOUD_CONFIG: dict[str, Any] = {
    "ssh_genkeytypes": ["ed25519"],
    "ssh": {"emit_keys_to_console": False},
    "grub_dpkg": {"enabled": False},
}


def lean_user_data(text: str) -> str:
    """user_data()'s #cloud-config with LEAN_CLOUD_CONFIG added (its own keys left as they are)."""
    header, _, body = text.partition("\n")
    assert header == "#cloud-config", header
    doc = json.loads(body)
    for key, value in LEAN_CLOUD_CONFIG.items():
        doc.setdefault(key, value)
    return "#cloud-config\n" + json.dumps(doc, indent=1) + "\n"
