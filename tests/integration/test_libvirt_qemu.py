"""libvirt's real qemu driver: a private libvirtd (session mode, as `nobody`, in a network
namespace of the test's own, TCG only) serves as a "remote" host. It proves the rendered domain
XML, the CPU mapping of the toggle, the monitor-based hypervisor detection, the balloon, managed
save and the lifecycle against libvirt itself, not its test driver.

Not covered: a hypervisor actually running inside the domain (that needs the nested-host image
booted by libvirt), and migration (it needs a second libvirtd with its own host UUID).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestor.errors import PolicyError
from nestor.remote import libvirt_engine
from nestor.remote.hosts import Hosts
from nestor.state import db

pytestmark = pytest.mark.vm
LIBVIRTD = "/usr/sbin/libvirtd"
M = 1 << 20


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _end(pid: int, timeout: float = 10) -> None:
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def libvirtd() -> Iterator[str]:
    """The socket URI of a libvirtd that this test started, and ends, by PID."""
    if os.geteuid() != 0 or not Path(LIBVIRTD).exists() or shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs root, libvirt-daemon-driver-qemu and qemu-system-x86 (scripts/setup installs them)")
    top = Path(tempfile.mkdtemp(prefix="nestor-lv-"))
    dirs = {name: top / name for name in ("home", "run", "cfg", "cache")}
    for path in dirs.values():
        path.mkdir(mode=0o700)
    shutil.chown(top, "nobody", "nogroup")
    for path in dirs.values():
        shutil.chown(path, "nobody", "nogroup")
    netns = f"nt-lv{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    daemon = None
    uri = ""
    log = open(top / "libvirtd.log", "wb")  # noqa: SIM115 (closed in finally)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        env = ["env", "-i", f"HOME={dirs['home']}", f"XDG_RUNTIME_DIR={dirs['run']}",
               f"XDG_CONFIG_HOME={dirs['cfg']}", f"XDG_CACHE_HOME={dirs['cache']}", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
        # ip, setpriv and env each exec the next, so the PID is libvirtd's.
        daemon = subprocess.Popen(
            ["ip", "netns", "exec", netns, "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
             *env, LIBVIRTD, "--timeout", "600"],
            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        sock = dirs["run"] / "libvirt" / "libvirt-sock"
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert daemon.poll() is None, (top / "libvirtd.log").read_text()
            assert time.monotonic() < deadline, "libvirtd did not create its socket"
            time.sleep(0.1)
        uri = f"qemu:///session?socket={sock}"
        yield uri
    finally:
        libvirt_engine.disconnect_all()
        if uri and daemon is not None and daemon.poll() is None:
            _destroy_all(uri)  # libvirtd stops its QEMUs and reaps them
        qemu_pids = []
        for pidfile in (dirs["run"] / "libvirt" / "qemu" / "run").glob("*.pid"):
            try:
                qemu_pids.append(int(pidfile.read_text().strip()))
            except (OSError, ValueError):
                pass
        if daemon is not None:
            _end(daemon.pid)
            daemon.wait(timeout=5)
        for pid in qemu_pids:  # domains libvirtd left running; their pidfiles vouch for them
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if _alive(pid) else b""
            if str(dirs["cfg"]).encode() in cmdline:
                _end(pid)
        subprocess.run(["ip", "netns", "del", netns], check=False)
        log.close()
        shutil.rmtree(top, ignore_errors=True)


def _destroy_all(uri: str) -> None:
    import libvirt

    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return
    try:
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                dom.destroy()
            except libvirt.libvirtError:
                pass
    finally:
        conn.close()


def qemu_cmdline(uri: str, name: str) -> str:
    run = Path(uri.split("socket=", 1)[1]).parent / "qemu" / "run"
    pid = int((run / f"{name}.pid").read_text())
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_nestor_vms_on_a_real_libvirtd(libvirtd: str, tmp_path: Path) -> None:
    hosts = Hosts(db.connect(tmp_path / "nestor.db"))
    view = hosts.add("local", libvirtd)
    assert view.caps is not None
    cpu = view.caps.cpu
    assert (view.caps.driver, view.caps.domain_type, cpu.nesting, cpu.nesting_flag) == ("QEMU", "qemu", True, "svm")
    assert "TCG" in cpu.nesting_reason and view.caps.free_memory > 0

    hosts.vm_new("l1", "local", memory=256 * M, maximum=512 * M, nested=True)
    hosts.vm_new("plain", "local", memory=256 * M)
    hosts.vm_start("l1")
    hosts.vm_start("plain")
    assert "svm=on" in qemu_cmdline(libvirtd, "l1")  # the toggle, as libvirt hands it to QEMU
    assert "svm=off" in qemu_cmdline(libvirtd, "plain") and "vmx=off" in qemu_cmdline(libvirtd, "plain")

    shown = hosts.vm_show("l1")
    assert shown.state == "running"
    assert shown.hypervisor_running is False  # read through libvirt's monitor passthrough
    assert shown.hypervisor_detection is not None and "of 1 vCPUs set" in shown.hypervisor_detection
    assert shown.memory_assigned == "512M"  # the balloon, before the guest has a driver

    assert "live" in hosts.vm_set_memory("l1", 384 * M)
    vm, host = hosts.get_vm("l1")
    dom = hosts.engine(host).domain(vm.uuid, "l1")
    import libvirt

    assert "<currentMemory unit='KiB'>393216</currentMemory>" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    with pytest.raises(PolicyError, match="can only be changed while the VM is off"):
        hosts.vm_set_processor("l1", nested=False)

    hosts.vm_save("l1")  # no hypervisor inside: allowed; libvirt's managed save
    assert hosts.vm_show("l1").state == "off" and dom.hasManagedSaveImage(0) == 1
    assert hosts.vm_start("l1").state == "running"  # resumed from the saved state
    assert hosts.vm_stop("l1", turn_off=True) == "turned off"
    hosts.vm_remove("l1")
    hosts.vm_remove("plain", force=True)
    assert hosts.vm_list() == [] and hosts.engine(host).states() == {}
