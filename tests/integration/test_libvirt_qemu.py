"""libvirt's real qemu driver. Private libvirtds (session mode, as `nobody`, each with its own
host UUID, all in one network namespace the test made, TCG only) serve as "remote" hosts. They
prove the rendered domain XML, the CPU mapping of the toggle, the monitor-based hypervisor
detection, the balloon, managed save, the lifecycle, and a live migration with nestor's flags,
against libvirt itself rather than its test driver.

A hypervisor really runs inside a libvirt domain in the last test: the appliance's KVM (AMD-V
emulated by TCG) with one live VM made by a 20-line C program (data/mkvm.c), not a full L2.
Not covered: ssh/TLS transports.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from nestor.errors import PolicyError, StateError
from nestor.remote import libvirt_engine
from nestor.remote.hosts import Hosts
from nestor.service.types import MemoryChange, MemoryOutcome, StopHow, VMSpec, VMState
from nestor.state import db
from tests.helpers import nestor_inprocess

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
        for net in conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE):
            try:
                net.destroy()  # libvirtd leaves a network's dnsmasq running when it exits
            except libvirt.libvirtError:
                pass
    finally:
        conn.close()


class Daemons:
    """libvirtds this test started in its namespace; each ended by PID, its QEMUs first."""

    def __init__(self, top: Path, netns: str) -> None:
        self.top = top
        self.netns = netns
        self.started: list[tuple[subprocess.Popen[bytes], Path, str, IO[bytes]]] = []

    def start(self, name: str, net_admin: bool = False) -> str:
        """`net_admin`: the daemon (and the dnsmasq it starts) may make bridges, addresses and firewall
        rules, in this test's namespace only (ambient capabilities; it still runs as nobody)."""
        root = self.top / name
        dirs = {d: root / d for d in ("home", "run", "cfg", "cache")}
        for path in dirs.values():
            path.mkdir(mode=0o700, parents=True)
        (dirs["cfg"] / "libvirt").mkdir()
        # Two libvirtds on one machine migrate only with distinct host UUIDs (FACTS.md).
        (dirs["cfg"] / "libvirt" / "libvirtd.conf").write_text(f'host_uuid = "{uuid.uuid4()}"\n')
        for path in (root, *root.rglob("*")):
            shutil.chown(path, "nobody", "nogroup")
        env = ["env", "-i", f"HOME={dirs['home']}", f"XDG_RUNTIME_DIR={dirs['run']}",
               f"XDG_CONFIG_HOME={dirs['cfg']}", f"XDG_CACHE_HOME={dirs['cache']}", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
        log = open(root / "libvirtd.log", "wb")  # noqa: SIM115 (closed in stop)
        # ip, (unshare, sh,) setpriv and env each exec the next, so the PID is libvirtd's.
        daemon = subprocess.Popen(
            ["ip", "netns", "exec", self.netns,
             # libvirt's DHCP lease helper insists on /run/leaseshelper.pid and /var/lib/libvirt/dnsmasq:
             # give this daemon an empty /run and /var/lib of its own (tmpfs in a private mount
             # namespace: nothing is made on the real file system; the script is fixed, the rest are
             # its arguments).
             *(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                "mount -t tmpfs -o mode=1777 tmpfs /run && mount -t tmpfs -o mode=0755 tmpfs /var/lib && "
                "mkdir -p -m 1777 /var/lib/libvirt/dnsmasq && "
                'exec "$@"', "sh"] if net_admin else []),
             "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
             *(["--inh-caps=+net_admin,+net_raw,+net_bind_service", "--ambient-caps=+net_admin,+net_raw,+net_bind_service"]
               if net_admin else []),
             *env, LIBVIRTD, "--timeout", "600"], stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        sock = dirs["run"] / "libvirt" / "libvirt-sock"
        uri = f"qemu:///session?socket={sock}"
        self.started.append((daemon, root, uri, log))
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert daemon.poll() is None, (root / "libvirtd.log").read_text()
            assert time.monotonic() < deadline, "libvirtd did not create its socket"
            time.sleep(0.1)
        return uri

    def stop(self) -> None:
        libvirt_engine.disconnect_all()
        for daemon, root, uri, log in self.started:
            qemu_pids = []
            if daemon.poll() is None:
                _destroy_all(uri)  # libvirtd stops its QEMUs and reaps them
            for pidfile in (root / "run" / "libvirt" / "qemu" / "run").glob("*.pid"):
                try:
                    qemu_pids.append(int(pidfile.read_text().strip()))
                except (OSError, ValueError):
                    pass
            _end(daemon.pid)
            daemon.wait(timeout=5)
            for pid in qemu_pids:  # QEMUs libvirtd left; their pidfiles and command lines vouch for them
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if _alive(pid) else b""
                if str(root).encode() in cmdline:
                    _end(pid)
            log.close()


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    if os.geteuid() != 0 or not Path(LIBVIRTD).exists() or shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs root, libvirt-daemon-driver-qemu and qemu-system-x86 (scripts/setup installs them)")
    top = Path(tempfile.mkdtemp(prefix="nestor-lv-"))
    shutil.chown(top, "nobody", "nogroup")
    netns = f"nt-lv{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    found = Daemons(top, netns)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        yield found
    finally:
        found.stop()
        subprocess.run(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(top, ignore_errors=True)


def qemu_cmdline(uri: str, name: str) -> str:
    run = Path(uri.split("socket=", 1)[1]).parent / "qemu" / "run"
    pid = int((run / f"{name}.pid").read_text())
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_nestor_vms_on_a_real_libvirtd(daemons: Daemons, tmp_path: Path) -> None:
    uri = daemons.start("a")
    hosts = Hosts(db.connect(tmp_path / "nestor.db"))
    info = hosts.host_add("local", uri)
    assert (info.driver, info.domain_type, info.nesting, info.nesting_flag) == ("QEMU", "qemu", True, "svm")
    assert info.nesting_reason and "TCG" in info.nesting_reason and info.free_memory and info.free_memory > 0

    hosts.vm_new(VMSpec("l1", host="local", memory=256 * M, maximum=512 * M, nested=True))
    hosts.vm_new(VMSpec("plain", host="local", memory=256 * M))
    hosts.vm_start("l1")
    hosts.vm_start("plain")
    assert "svm=on" in qemu_cmdline(uri, "l1")  # the toggle, as libvirt hands it to QEMU
    assert "svm=off" in qemu_cmdline(uri, "plain") and "vmx=off" in qemu_cmdline(uri, "plain")

    shown = hosts.vm_show("l1")
    assert shown.state is VMState.RUNNING and shown.host == "local" and shown.host_state is None
    assert shown.hypervisor_running is False  # read through libvirt's monitor passthrough
    assert shown.hypervisor_detection is not None and "of 1 vCPUs set" in shown.hypervisor_detection
    assert shown.memory_assigned == 512 * M  # the balloon, before the guest has a driver

    import libvirt

    resized = hosts.vm_set_memory("l1", MemoryChange(startup=384 * M))
    assert (resized.outcome, resized.target) == (MemoryOutcome.RESIZED, 384 * M)
    vm, host = hosts.get_vm("l1")
    dom = hosts.engine(host).domain(vm.uuid, "l1")
    assert "<currentMemory unit='KiB'>393216</currentMemory>" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    with pytest.raises(PolicyError, match="can only be changed while the VM is off"):
        hosts.vm_set_processor("l1", nested=False)

    assert hosts.vm_save("l1").size == 0  # no hypervisor inside: allowed; libvirt's managed save
    assert hosts.vm_show("l1").state is VMState.SAVED and dom.hasManagedSaveImage(0) == 1
    assert hosts.vm_start("l1").state is VMState.RUNNING  # resumed from the saved state
    assert hosts.vm_stop("l1", turn_off=True).how is StopHow.TURNED_OFF
    hosts.vm_remove("l1")
    hosts.vm_remove("plain", force=True)
    assert hosts.vm_list() == [] and hosts.engine(host).states() == {}



WATCHDOG = 120.0  # seconds: far beyond keepalive's 2 s x (2 + 1) and the 5 s open of the test below


def test_a_libvirtd_that_stops_answering_ends_calls_with_a_clear_error(
        daemons: Daemons, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18: a host that accepted the connection and then froze (its libvirtd SIGSTOPped: it still
    accepts on its socket and never answers) ends every call on the open connection through
    keepalive, with an error naming the host; once it answers again, nestor connects again."""
    from nestor.errors import EngineError
    from nestor.remote import keepalive

    # shorter than the defaults (5 s x 5, open 30 s) to keep the test short; the same mechanism
    monkeypatch.setattr(keepalive, "INTERVAL", 2)
    monkeypatch.setattr(keepalive, "COUNT", 2)
    monkeypatch.setattr(libvirt_engine, "CONNECT_TIMEOUT", 5.0)
    libvirt_engine.disconnect_all()
    uri = daemons.start("frozen")
    hosts = Hosts(db.connect(tmp_path / "nestor.db"))
    hosts.host_add("frozen", uri)
    hosts.vm_new(VMSpec("idle", host="frozen", memory=256 * M))
    assert hosts.host_show("frozen").reachable and hosts.vm_show("idle").state is VMState.OFF

    daemon = daemons.started[-1][0]  # this test's own libvirtd (the fixture execs down to it)
    assert Path(f"/proc/{daemon.pid}/comm").read_text().strip() == "libvirtd"
    # A call blocked in C is out of reach of pytest-timeout's signal: a watchdog continues the daemon
    # after WATCHDOG s, which ends such a call, and the test then fails on `rescued`.
    rescued = threading.Event()

    def rescue() -> None:
        rescued.set()
        os.kill(daemon.pid, signal.SIGCONT)

    watchdog = threading.Timer(WATCHDOG, rescue)
    os.kill(daemon.pid, signal.SIGSTOP)
    watchdog.start()
    try:
        shown = hosts.host_show("frozen")  # on the open connection: keepalive ends it
        assert not rescued.is_set(), f"host show blocked on a stopped libvirtd until the {WATCHDOG} s watchdog"
        assert not shown.reachable and shown.error, shown
        assert shown.error.startswith(f"host 'frozen' ({uri}) stopped answering: cannot read capabilities: "), shown.error
        assert shown.error.endswith("; check the host, then retry") and "keepalive" in shown.error, shown.error

        with pytest.raises(EngineError) as caught:  # a new connection: the open's deadline
            hosts.vm_start("idle")
        assert caught.value.message == f"host 'frozen': cannot connect to {uri}: no answer within 5 s"
        with pytest.raises(EngineError, match="has not been answered yet"):  # no second blocked open
            hosts.vm_start("idle")
        assert not rescued.is_set(), f"vm start blocked on a stopped libvirtd until the {WATCHDOG} s watchdog"
    finally:
        watchdog.cancel()
        os.kill(daemon.pid, signal.SIGCONT)

    deadline = time.monotonic() + 120  # the abandoned open finishes once libvirtd runs again
    while not (shown := hosts.host_show("frozen")).reachable:
        assert time.monotonic() < deadline, shown.error
        time.sleep(0.5)
    assert hosts.vm_show("idle").state is VMState.OFF
    hosts.vm_remove("idle")

COUNTER = 'i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.2; done\n'


def _ticks(path: Path) -> list[int]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [int(line.split()[1]) for line in text.splitlines() if line.startswith("tick ") and line.split()[1:2]
            and line.split()[1].isdigit()]


def _wait_ticks(path: Path, more_than: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ticks = _ticks(path)
        if ticks and ticks[-1] > more_than:
            return ticks
        time.sleep(0.2)
    tail = path.read_text(errors="replace")[-2000:] if path.exists() else "no file"
    raise AssertionError(f"no tick above {more_than} in {path} after {timeout} s: {tail}")


def test_live_move_between_two_libvirtds(daemons: Daemons, tmp_path: Path, image_store: Path) -> None:
    """An appliance counting on its serial console moves live from host a to host b and keeps counting."""
    from nestor.images import appliance

    uri_a, uri_b = daemons.start("a"), daemons.start("b")
    app = appliance.load_appliance(image_store)
    assert app is not None
    files = daemons.top / "images"  # where both "hosts" (the nobody libvirtds) can read them
    files.mkdir()
    shutil.copy(app.kernel.vmlinux, files / "vmlinux")
    script = tmp_path / "count.sh"
    script.write_text(COUNTER)
    appliance.make_run_cpio(script, tmp_path / "run.cpio")
    (files / "initrd.img").write_bytes(app.initrd.read_bytes() + (tmp_path / "run.cpio").read_bytes())
    for path in (files, *files.iterdir()):
        shutil.chown(path, "nobody", "nogroup")

    detector_answer: list[tuple[bool | None, str]] = []

    def detector(dom: object) -> tuple[bool | None, str]:
        return detector_answer[-1] if detector_answer else libvirt_engine.registers_detector(dom)

    hosts = Hosts(db.connect(tmp_path / "nestor.db"), detector)
    hosts.host_add("a", uri_a)
    hosts.host_add("b", uri_b)
    hosts.vm_new(VMSpec("app", host="a", memory=256 * M, nested=True, kernel=str(files / "vmlinux"),
                        initrd=str(files / "initrd.img"), append="console=ttyS0 panic=-1"))
    vm, host_a = hosts.get_vm("app")
    serial = daemons.top / "app-serial.log"
    # The serial console into a file both libvirtds can write (the spec's serial_log).
    spec = hosts.spec(vm, hosts.engine(host_a).caps())
    from dataclasses import replace

    from nestor.remote import domxml

    hosts.engine(host_a).conn.defineXML(domxml.render(replace(spec, serial_log=str(serial))))
    hosts.vm_start("app")
    before = _wait_ticks(serial, 5, timeout=120)[-1]

    detector_answer.append((True, "test: EFER.SVME set"))
    with pytest.raises(PolicyError, match=r"cannot be moved \(rules R12-R14\)"):
        hosts.vm_move("app", "b", lambda line: None)
    assert hosts.get_vm("app")[1].name == "a" and hosts.vm_show("app").state is VMState.RUNNING
    detector_answer.clear()  # the real detector: EFER.SVME of the running appliance is clear

    lines: list[str] = []
    started = time.monotonic()
    moved = hosts.vm_move("app", "b", lines.append)
    print(f"live move: {time.monotonic() - started:.2f} s, progress lines: {lines}")
    assert (moved.source, moved.dest, moved.live, moved.disk_copied_to) == ("a", "b", True, None)
    assert "live, persist-dest, undefine-source" in lines[0]
    vm, host = hosts.get_vm("app")
    assert host.name == "b" and hosts.vm_show("app").state is VMState.RUNNING
    assert hosts.engine(host_a).states() == {}  # undefined at the source
    # Every boot counts from 0. The destination's QEMU reopens (truncates) the serial file, so
    # what follows the move must continue above `before`, without a new "tick 0" (no reboot).
    after = _wait_ticks(serial, before + 10, timeout=60)
    since = after[after.index(before) + 1:] if before in after else after
    assert since and 0 not in since and since[0] > before, (before, after)
    assert since == list(range(since[0], since[0] + len(since))), f"the counter skipped: {since}"
    assert "-incoming" in qemu_cmdline(uri_b, "app")  # the QEMU on b is the migration's destination


def _appliance_files(daemons: Daemons, image_store: Path, tmp_path: Path, script: str,
                     extra: dict[str, Path] | None = None) -> Path:
    """vmlinux and an initrd with /nestor/run.sh (and extra files), where the libvirtds can read them."""
    from nestor.images import appliance
    from nestor.images.cpio import NewcWriter

    app = appliance.load_appliance(image_store)
    assert app is not None
    files = daemons.top / "images"
    files.mkdir(exist_ok=True)
    shutil.copy(app.kernel.vmlinux, files / "vmlinux")
    writer = NewcWriter()
    writer.directory("nestor", 0o755)
    writer.file("nestor/run.sh", script.encode(), 0o755)
    for name, path in (extra or {}).items():
        writer.file(f"nestor/{name}", path.read_bytes(), 0o755)
    (files / "initrd.img").write_bytes(app.initrd.read_bytes() + writer.finish())
    for path in (files, *files.iterdir()):
        shutil.chown(path, "nobody", "nogroup")
    return files


def _wait_text(path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    tail = path.read_text(errors="replace")[-3000:] if path.exists() else "no file"
    raise AssertionError(f"{text!r} not in {path} after {timeout} s: {tail}")


def test_a_hypervisor_running_inside_is_seen_through_libvirt(daemons: Daemons, tmp_path: Path,
                                                             image_store: Path) -> None:
    """R7 and R12-R14 on a libvirt VM with the real detector: EFER.SVME read over libvirt."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc and libc6-dev (scripts/setup installs them)")
    from dataclasses import replace

    from nestor.remote import domxml

    mkvm = tmp_path / "mkvm"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(mkvm), str(Path(__file__).parent / "data" / "mkvm.c")],
                   check=True, timeout=120)
    script = ("grep -qw svm /proc/cpuinfo && echo 'svm: visible'\n"
              "[ -c /dev/kvm ] && echo 'kvm: ready, no VM yet'\n"
              "sleep 12\n"
              "exec /nestor/mkvm\n")
    files = _appliance_files(daemons, image_store, tmp_path, script, {"mkvm": mkvm})
    uri_a, uri_b = daemons.start("a"), daemons.start("b")
    hosts = Hosts(db.connect(tmp_path / "nestor.db"))  # the real detector
    hosts.host_add("a", uri_a)
    hosts.host_add("b", uri_b)
    hosts.vm_new(VMSpec("l1", host="a", memory=256 * M, maximum=384 * M, nested=True, kernel=str(files / "vmlinux"),
                        initrd=str(files / "initrd.img"), append="console=ttyS0 panic=-1"))
    vm, host = hosts.get_vm("l1")
    serial = daemons.top / "l1-serial.log"
    engine = hosts.engine(host)
    engine.conn.defineXML(domxml.render(replace(hosts.spec(vm, engine.caps()), serial_log=str(serial))))
    hosts.vm_start("l1")

    _wait_text(serial, "kvm: ready, no VM yet", timeout=120)
    assert "svm: visible" in serial.read_text(errors="replace")
    quiet = hosts.vm_show("l1")
    assert quiet.hypervisor_running is False, quiet  # kvm_amd loaded, no VM: EFER.SVME clear

    _wait_text(serial, "mkvm: a VM is live", timeout=60)
    busy = hosts.vm_show("l1")
    assert busy.hypervisor_running is True, busy
    assert busy.hypervisor_detection is not None and "through libvirt" in busy.hypervisor_detection
    dom = engine.domain(vm.uuid, "l1")
    import libvirt

    before = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    with pytest.raises(PolicyError, match=r"memory not changed \(rule R7\)"):
        hosts.vm_set_memory("l1", MemoryChange(startup=320 * M))
    with pytest.raises(PolicyError, match=r"cannot be saved \(rules R12-R14\)"):
        hosts.vm_save("l1")
    with pytest.raises(PolicyError, match=r"cannot be moved \(rules R12-R14\)"):
        hosts.vm_move("l1", "b", lambda line: None)
    assert dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == before and dom.hasManagedSaveImage(0) == 0
    assert hosts.get_vm("l1")[1].name == "a" and hosts.engine(hosts.hosts.get("b")).states() == {}
    assert hosts.vm_show("l1").state is VMState.RUNNING
    with pytest.raises(StateError):
        hosts.vm_remove("l1")  # running: refused without --force
    hosts.vm_remove("l1", force=True)


def _dir_pool(uri: str, path: Path) -> None:
    """A libvirt dir pool named 'default' on that libvirtd: the host's own storage."""
    import libvirt

    path.mkdir()
    shutil.chown(path, "nobody", "nogroup")
    conn = libvirt.open(uri)
    try:
        pool = conn.storagePoolDefineXML(
            f"<pool type='dir'><name>default</name><target><path>{path}</path></target></pool>", 0)
        pool.create(0)
    finally:
        conn.close()


def test_live_move_copies_a_disk_the_destination_lacks(daemons: Daemons, tmp_path: Path, image_store: Path) -> None:
    """Each libvirtd has its own storage pool; a running VM's disk is copied to b's while it keeps counting."""
    uri_a, uri_b = daemons.start("a"), daemons.start("b")
    _dir_pool(uri_a, daemons.top / "pool-a")
    _dir_pool(uri_b, daemons.top / "pool-b")
    files = _appliance_files(daemons, image_store, tmp_path, COUNTER)
    import libvirt

    conn = libvirt.open(uri_a)
    try:
        vol = conn.storagePoolLookupByName("default").createXML(
            "<volume><name>app.img</name><capacity unit='MiB'>24</capacity><target><format type='raw'/></target></volume>", 0)
        disk = Path(vol.path())
    finally:
        conn.close()
    marker = secrets.token_bytes(1 << 20)
    with open(disk, "r+b") as f:  # data the copy must carry (the file stays the libvirtd's)
        f.seek(5 << 20)
        f.write(marker)

    hosts = Hosts(db.connect(tmp_path / "nestor.db"), lambda dom: (False, "test: no hypervisor"))
    hosts.host_add("a", uri_a)
    hosts.host_add("b", uri_b)
    hosts.vm_new(VMSpec("app", host="a", memory=256 * M, kernel=str(files / "vmlinux"),
                        initrd=str(files / "initrd.img"), append="console=ttyS0 panic=-1", disk=str(disk)))
    from dataclasses import replace

    from nestor.remote import domxml

    vm, host_a = hosts.get_vm("app")
    serial = daemons.top / "app-serial.log"
    engine_a = hosts.engine(host_a)
    engine_a.conn.defineXML(domxml.render(replace(hosts.spec(vm, engine_a.caps()), serial_log=str(serial))))

    # an off VM whose disk b lacks: refused, nothing changed
    with pytest.raises(StateError, match="copies a disk only while the VM runs"):
        hosts.vm_move("app", "b", lambda line: None)
    assert hosts.get_vm("app")[1].name == "a" and not list((daemons.top / "pool-b").iterdir())

    hosts.vm_start("app")
    before = _wait_ticks(serial, 5, timeout=120)[-1]
    lines: list[str] = []
    started = time.monotonic()
    result = hosts.vm_move("app", "b", lines.append)
    print(f"live move with a 24 MiB disk copy: {time.monotonic() - started:.2f} s, progress: {lines}")
    moved = daemons.top / "pool-b" / "app.img"
    assert (result.dest, result.live, result.disk_copied_to) == ("b", True, str(moved)), result
    assert "copy-storage" in lines[0] and any(str(moved) in line for line in lines)
    vm, host = hosts.get_vm("app")
    assert host.name == "b" and vm.disk == str(moved) and hosts.vm_show("app").state is VMState.RUNNING
    import libvirt as lv

    dom_b = hosts.engine(host).domain(vm.uuid, "app")
    assert f"file='{moved}'" in dom_b.XMLDesc(0) and f"file='{moved}'" in dom_b.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE)
    with open(moved, "rb") as f:
        f.seek(5 << 20)
        assert f.read(len(marker)) == marker, "the disk's data did not arrive on b"
    assert disk.exists()  # the source's copy is kept
    after = _wait_ticks(serial, before + 10, timeout=60)
    since = after[after.index(before) + 1:] if before in after else after
    assert since and 0 not in since and since[0] > before, (before, after)


# The guest's end of the API channel, in busybox sh: it answers the channel's sync and GET /v1/tree
# with a fixed level (the appliance has no Python, so no real `nestor serve`; the host side is
# nestor's: the domain's channel, virDomainOpenChannel through the binding, the framing, the descent).
# q35 (libvirt's machine) puts virtio on PCI; the appliance initrd carries no virtio_pci, so the
# test's cpio brings it.
RESPONDER = r'''for m in virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci; do insmod /nestor/$m.ko; done
modprobe virtio_console
port=
for i in $(seq 50); do
    for f in /sys/class/virtio-ports/*/name; do
        [ "$(cat "$f" 2>/dev/null)" = org.nestor.api.0 ] && port=/dev/$(basename "$(dirname "$f")")
    done
    [ -n "$port" ] && [ -c "$port" ] && break
    sleep 0.2
done
echo "api port: $port"
json='"content-type": "application/json"'
while true; do
    exec 3<>"$port"  # a virtio port opens once at a time: one descriptor for both ways
    while read -r line <&3; do
        id=$(echo "$line" | sed -n 's/^{"id": *\([0-9]*\).*/\1/p')
        [ -n "$id" ] || continue
        case "$line" in
            *'"sync": true'*) echo "{\"id\": $id, \"sync\": true}" >&3 ;;
            *'"path": "/v1/tree'*)
                echo "{\"id\": $id, \"status\": 200, \"headers\": {$json}, \"body\": \"@BODY@\"}" >&3
                echo "answered tree" ;;
            *) echo "{\"id\": $id, \"status\": 404, \"headers\": {}, \"body\": \"\"}" >&3 ;;
        esac
    done
    exec 3<&-
    sleep 0.2
done
'''


def test_tree_descends_into_a_libvirt_vm_through_its_api_channel(daemons: Daemons, tmp_path: Path,
                                                                image_store: Path) -> None:
    import base64
    import json

    inner = {"host": "inner-l1", "level": 1, "hosts": [], "vms": [
        {"name": "l2", "level": 1, "state": "running", "vcpus": 1, "memory": "128M", "nested": True,
         "children": [{"name": "l3", "level": 2, "state": "off", "vcpus": 1, "memory": "64M", "nested": False}]}]}
    script = RESPONDER.replace("@BODY@", base64.b64encode(json.dumps(inner).encode()).decode())
    virtio = image_store / "kernel" / "lib" / "modules"
    kos = {f"{m}.ko": next(virtio.glob(f"*/kernel/drivers/virtio/{m}.ko"))
           for m in ("virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci")}
    files = _appliance_files(daemons, image_store, tmp_path, script, kos)
    uri = daemons.start("a")
    home = tmp_path / "home"

    def cli(*args: str) -> tuple[int, str, str]:
        result = nestor_inprocess(home, *args, check=False)
        return result.returncode, result.stdout, result.stderr

    assert cli("host", "add", "a", uri)[0] == 0
    shutil.copy(files / "initrd.img", files / "responder.img")
    from nestor.images import appliance

    app = appliance.load_appliance(image_store)
    assert app is not None
    shutil.copy(app.initrd, files / "mute.img")  # a nested VM whose guest serves no nestor API
    for path in (files / "responder.img", files / "mute.img"):
        shutil.chown(path, "nobody", "nogroup")
    for name, nested, initrd in (("l1", True, "responder.img"), ("plain", False, "responder.img"),
                                 ("mute", True, "mute.img")):
        code, out, err = cli("vm", "new", name, "--host", "a", "--memory", "256M", "--kernel", str(files / "vmlinux"),
                             "--initrd", str(files / initrd), "--append", "console=ttyS0 panic=-1",
                             *(["--nested"] if nested else []))
        assert code == 0, err
    hosts = Hosts(db.connect(home / "nestor.db"))
    vm, host = hosts.get_vm("l1")
    engine = hosts.engine(host)
    assert "org.nestor.api.0" in engine.domain(vm.uuid, "l1").XMLDesc(0)
    assert "org.nestor.api.0" not in engine.domain(hosts.get_vm("plain")[0].uuid, "plain").XMLDesc(0)
    serial = daemons.top / "l1-serial.log"
    from dataclasses import replace

    from nestor.remote import domxml

    engine.conn.defineXML(domxml.render(replace(hosts.spec(vm, engine.caps()), serial_log=str(serial))))
    for name in ("l1", "plain", "mute"):
        assert cli("vm", "start", name)[0] == 0
    _wait_text(serial, "api port: /dev/vport", timeout=120)

    started = time.monotonic()
    code, out, err = cli("tree", "-o", "json", "--timeout", "20")
    print(f"tree through libvirt channels: {time.monotonic() - started:.2f} s")
    assert code == 0, err
    tree = json.loads(out)
    (node,) = tree["hosts"]
    vms = {v["name"]: v for v in node["vms"]}
    l1 = vms["l1"]
    assert l1["reachable"] is True and l1["level"] == 1, (l1.get("error"), serial.read_text(errors="replace")[-1500:])
    (l2,) = l1["children"]
    assert (l2["name"], l2["level"], l2["nested"]) == ("l2", 2, True)  # levels counted from this host
    assert [(c["name"], c["level"]) for c in l2["children"]] == [("l3", 3)]
    assert vms["plain"]["reachable"] is None and vms["plain"]["children"] == []  # nesting off: not asked
    assert vms["mute"]["reachable"] is False and "no answer" in vms["mute"]["error"], vms["mute"]
    code, out, _ = cli("tree", "--timeout", "20")
    assert "l1 (L1)" in out and "l2 (L2)" in out and "l3 (L3)" in out and "mute (L1)" in out, out
    assert "answered tree" in serial.read_text(errors="replace")
    import threading

    deadline = time.monotonic() + 10
    while any(t.name.startswith("channel-") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("channel-")]  # closed streams end their readers
    libvirt_engine.disconnect_all()


def _root_netns_state() -> tuple[str, str]:
    """The root namespace's links and nft ruleset, read only: the test must leave no trace there."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
    return links, rules


def test_nat_on_a_libvirt_host_is_a_libvirt_nat_network(daemons: Daemons, tmp_path: Path) -> None:
    """`nat new --host` on a real libvirtd: the network is up with its gateway, DHCP and NAT rules, all
    inside the test's namespace. (The daemon runs as nobody with CAP_NET_ADMIN there; libvirt 9 writes
    NAT rules with iptables, i.e. iptables-nft in that namespace.)"""
    if shutil.which("iptables") is None:
        pytest.skip("needs iptables (scripts/setup installs it): libvirt 9 programs NAT networks with it")
    import json

    links_before, _ = _root_netns_state()
    uri = daemons.start("a", net_admin=True)
    home = tmp_path / "home"

    def cli(*args: str) -> tuple[int, str, str]:
        result = nestor_inprocess(home, *args, check=False)
        return result.returncode, result.stdout, result.stderr

    def in_ns(*argv: str) -> str:
        return subprocess.run(["ip", "netns", "exec", daemons.netns, *argv], capture_output=True, text=True,
                              check=True).stdout

    assert cli("host", "add", "a", uri)[0] == 0
    code, out, err = cli("nat", "new", "vmnat", "--host", "a", "--prefix", "192.168.177.0/24", "--dhcp", "-o", "json")
    assert code == 0, err
    row = json.loads(out)
    assert (row["state"], row["gateway"]) == ("active", "192.168.177.1") and row["bridge"], row
    bridge = row["bridge"]
    assert "192.168.177.1/24" in in_ns("ip", "-o", "addr", "show", "dev", bridge)
    ruleset = in_ns("nft", "list", "ruleset")
    assert "192.168.177.0/24" in ruleset and "masquerade" in ruleset, ruleset
    dnsmasq = [p for p in Path("/proc").glob("[0-9]*/cmdline")
               if b"dnsmasq" in _read(p) and str(daemons.top).encode() in _read(p)]
    (conf,) = (daemons.top / "a").rglob("vmnat.conf")
    assert dnsmasq and "dhcp-range=192.168.177.2,192.168.177.254" in conf.read_text(), conf.read_text()
    listed = json.loads(cli("nat", "list", "-o", "json")[1])
    assert [(n["name"], n["host"], n["state"]) for n in listed] == [("vmnat", "a", "active")]
    code, _, err = cli("vm", "new", "web", "--host", "a", "--network", "vmnat")
    assert code == 0, err
    assert "<source network='vmnat'" in _domain_xml(uri, "web")

    links_after, _ = _root_netns_state()
    assert bridge not in links_after and links_before.count("virbr") == links_after.count("virbr")
    assert cli("nat", "remove", "vmnat")[0] != 0  # web uses it
    assert cli("vm", "remove", "web")[0] == 0
    code, _, err = cli("nat", "remove", "vmnat")
    assert code == 0, err
    assert bridge not in in_ns("ip", "-o", "link") and "192.168.177.0/24" not in in_ns("nft", "list", "ruleset")
    libvirt_engine.disconnect_all()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _domain_xml(uri: str, name: str) -> str:
    import libvirt

    conn = libvirt.open(uri)
    try:
        return str(conn.lookupByName(name).XMLDesc(0))
    finally:
        conn.close()
