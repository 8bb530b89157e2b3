"""L0 → L1 → L2 for real: nested-host image, agent exec, detection, tree (TCG L1, KVM inside it)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nestor.images.appliance import BOOT_LINE as L2_BOOT_LINE
from nestor.images.nested_host import BOOT_LINE as L1_BOOT_LINE
from tests.helpers import in_l1, nestor, reap_home, show, vm_dir, wait_for_text

pytestmark = [pytest.mark.vm, pytest.mark.nested, pytest.mark.usefixtures("l1_state_on_failure")]




def test_l1_has_svm_and_its_nestor_uses_kvm(l1_home: Path) -> None:
    check = json.loads(in_l1(l1_home, "nestor", "host", "check", "-o", "json"))
    vendor = check["facts"]["cpu_vendor"]  # what L0's engine gave l1: AMD's svm under TCG, the host's under KVM
    flag = {"amd": "svm", "intel": "vmx"}[vendor]
    assert int(in_l1(l1_home, "grep", "-c", "-w", flag, "/proc/cpuinfo")) > 0
    by_name = {c["name"]: c for c in check["checks"]}
    assert by_name["accelerator"]["detail"].startswith("kvm"), by_name
    assert by_name["nested virtualization"]["ok"] is True
    assert check["facts"]["kvm_kind"] == "hardware" and check["facts"]["kvm_module"] == f"kvm_{vendor}"


def test_exec_passes_exit_code_and_output(l1_home: Path) -> None:
    result = nestor(l1_home, "vm", "exec", "l1", "--", "sh", "-c", "echo out; echo err >&2; exit 7", check=False)
    assert result.returncode == 7 and result.stdout == "out\n" and result.stderr == "err\n"


def test_l2_in_l1_detection_and_tree(l1_home: Path) -> None:
    assert show(l1_home, "l1")["hypervisor_running"] is False
    in_l1(l1_home, "nestor", "vm", "new", "l2", "--memory", "192M")
    in_l1(l1_home, "nestor", "vm", "start", "l2")
    in_l1(l1_home, "nestor", "vm", "log", "l2", "--until", L2_BOOT_LINE, "--timeout", "150")
    l2 = json.loads(in_l1(l1_home, "nestor", "vm", "show", "l2", "-o", "json"))
    assert l2["accelerator"] == "kvm" and l2["cpu_model"].startswith("host")
    # L1's nestor runs L2's QEMU unprivileged too (the nested-host image has the user).
    status = in_l1(l1_home, "cat", f"/proc/{l2['pid']}/status")
    uid = in_l1(l1_home, "id", "-u", "nestor-qemu").strip()
    assert f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}" in status and uid != "0", status
    assert "CapEff:\t0000000000000000" in status, status
    shown = show(l1_home, "l1")
    assert shown["hypervisor_running"] is True, shown

    tree = json.loads(nestor(l1_home, "tree", "-o", "json", timeout=120).stdout)
    (l1,) = tree["vms"]
    assert l1["name"] == "l1" and l1["level"] == 1 and l1["reachable"] is True
    assert [(c["name"], c["level"], c["state"]) for c in l1["children"]] == [("l2", 2, "running")]
    text = nestor(l1_home, "tree", timeout=120).stdout
    assert "l2 (L2)" in text

    # A path reaches the deeper level through l1's nestor; l2 (an appliance) has no agent.
    deeper = nestor(l1_home, "vm", "exec", "l1/l2", "--", "true", check=False, timeout=120)
    assert deeper.returncode != 0 and "no guest agent" in deeper.stderr

    in_l1(l1_home, "nestor", "vm", "stop", "l2", "--turn-off")
    deadline = time.monotonic() + 30
    while show(l1_home, "l1")["hypervisor_running"] and time.monotonic() < deadline:
        time.sleep(1)
    assert show(l1_home, "l1")["hypervisor_running"] is False


def test_tree_marks_a_silent_level_unreachable(l1_home: Path) -> None:
    from nestor.engine.qmp import Monitor

    sock = vm_dir(l1_home, "l1") / "qmp.sock"
    with Monitor(sock, "l1") as mon:
        mon.pause()
    try:
        result = nestor(l1_home, "tree", "-o", "json", "--timeout", "4", timeout=60)
        (l1,) = json.loads(result.stdout)["vms"]
        assert l1["reachable"] is False and l1["error"]
    finally:
        with Monitor(sock, "l1") as mon:
            mon.resume()


def test_exec_errors(l1_home: Path) -> None:
    assert "not found" in nestor(l1_home, "vm", "exec", "nope", "--", "true", check=False).stderr
    result = nestor(l1_home, "vm", "exec", "l1", check=False)
    assert result.returncode != 0 and result.stderr.startswith("error:")


def test_l1_with_nesting_off_has_no_svm(nested_store: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "images").symlink_to(nested_store)
    try:
        nestor(home, "vm", "new", "flat", "--image", "nested-host", "--memory", "768M")
        nestor(home, "vm", "start", "flat")
        boot_log = wait_for_text(vm_dir(home, "flat") / "serial.log", L1_BOOT_LINE, timeout=180)
        assert "can't open" not in boot_log, boot_log  # the init reads nothing before it exists
        result = nestor(home, "vm", "exec", "flat", "--", "grep", "-c", "-w", "svm", "/proc/cpuinfo", check=False)
        assert result.stdout.strip() == "0"
        check = json.loads(nestor(home, "vm", "exec", "flat", "--", "nestor", "host", "check", "-o", "json").stdout)
        by_name = {c["name"]: c for c in check["checks"]}
        assert by_name["nested virtualization"]["ok"] is False
        # The nested-host image hears the ACPI power button too.
        assert "shut down" in nestor(home, "vm", "stop", "flat", "--timeout", "60").stdout
    finally:
        from tests.helpers import reap_home

        reap_home(home)


def test_quickstart_end_to_end(nested_store: Path, tmp_path: Path) -> None:
    home = tmp_path / "qs"
    home.mkdir()
    (home / "images").symlink_to(nested_store)
    try:
        result = nestor(home, "quickstart", "-o", "json", timeout=600)
        data = json.loads(result.stdout)
        assert data["ok"] is True
        (l1,) = data["tree"]["vms"]
        assert [c["name"] for c in l1["children"]] == ["l2"]
        assert data["facts"]["hypervisor running in l1 with l2"] is True
        assert data["facts"]["l2 reached l0 through NAT"] is True
        assert json.loads(nestor(home, "vm", "list", "-o", "json").stdout) == []  # torn down
    finally:
        nestor(home, "quickstart", "--teardown", check=False)
        reap_home(home)  # the home's on-demand daemon (started with l1) would only end after a minute idle


def test_host_check_tree_and_bugreport_reach_l1(l1_home: Path, tmp_path: Path) -> None:
    """L0 asks the nestor inside l1 for its own checks and bug report, through its API channel."""
    import tarfile

    tree = json.loads(nestor(l1_home, "host", "check", "--tree", "-o", "json").stdout)
    inside = tree["below"]["l1"]
    assert inside["facts"]["level"] == tree["facts"]["level"] + 1
    assert {c["name"] for c in inside["checks"]} >= {"accelerator", "nested virtualization"}
    text = nestor(l1_home, "host", "check", "--tree").stdout
    assert "L0 (" in text and "\n  l1 (" in text

    archive = tmp_path / "report.tar.gz"
    out = json.loads(nestor(l1_home, "bugreport", "--file", str(archive), "-o", "json").stdout)
    assert out["levels"] == ["L0", "L0/l1"]
    with tarfile.open(archive) as tar:
        names = {m.name.split("/", 1)[1] for m in tar.getmembers()}
    assert {"L0/vms/l1/argv.txt", "L0/vms/l1/inside/versions.txt", "L0/vms/l1/inside/kvm-parameters.txt"} <= names
    only_l1 = json.loads(nestor(l1_home, "bugreport", "l1", "--file", str(tmp_path / "l1.tar.gz"), "-o", "json").stdout)
    assert only_l1["levels"] == ["l1"]


def test_ps_computer_name_drives_l1s_nestor(l1_home: Path) -> None:
    """`nestor ps` with Hyper-V's -ComputerName: each cmdlet runs on l1's nestor (its API channel), objects
    carry ComputerName down the pipeline, l1's own CLI sees the changes, L0's VMs do not change."""
    def ps(script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return nestor(l1_home, "ps", "-c", script, "-o", "json", check=check, timeout=240)

    before = nestor(l1_home, "vm", "list", "-o", "json").stdout
    (made,) = json.loads(ps("New-VM -Name psvm -MemoryStartupBytes 160MB -ComputerName l1").stdout)
    assert (made["Name"], made["ComputerName"], made["MemoryStartup"]) == ("psvm", "l1", 160 << 20)
    try:
        ps("Start-VM psvm -ComputerName l1")
        assert json.loads(in_l1(l1_home, "nestor", "vm", "show", "psvm", "-o", "json"))["state"] == "running"
        listed = {o["Name"]: o for o in json.loads(ps("Get-VM -ComputerName l1").stdout)}
        assert listed["psvm"]["State"] == "Running" and listed["psvm"]["ComputerName"] == "l1"
        ps("Stop-VM -Name psvm -ComputerName l1 -TurnOff")
        assert json.loads(in_l1(l1_home, "nestor", "vm", "show", "psvm", "-o", "json"))["state"] == "off"
        (processor,) = json.loads(ps("Get-VM psvm -ComputerName l1 | Set-VMProcessor -Count 2 -Passthru").stdout)
        assert (processor["Count"], processor["ComputerName"]) == (2, "l1")
        assert json.loads(in_l1(l1_home, "nestor", "vm", "show", "psvm", "-o", "json"))["vcpus"] == 2
        missing = ps("Stop-VM l9 -ComputerName l1", check=False)
        assert missing.returncode != 0 and "vm 'l1/l9': no VM 'l9' in l1" in missing.stderr, missing.stderr
        assert "is not a VM path" in ps("Get-VM -ComputerName l1//x", check=False).stderr
        ps("Get-VM psvm -ComputerName l1 | Remove-VM")
        names = [v["name"] for v in json.loads(in_l1(l1_home, "nestor", "vm", "list", "-o", "json"))]
        assert "psvm" not in names
    finally:
        # gone already when the test passed; else l1's own CLI removes it (this check=False is cleanup only)
        nestor(l1_home, "vm", "exec", "l1", "--", "nestor", "vm", "remove", "psvm", "--force", check=False, timeout=120)
    assert [v["name"] for v in json.loads(before)] == [v["name"] for v in json.loads(
        nestor(l1_home, "vm", "list", "-o", "json").stdout)]


def test_paths_drive_l2_from_l0(l1_home: Path) -> None:
    """Issue 16: L0's CLI addresses l1's VMs and switches by path (`l1/p2`, `--at l1`); l1's own CLI
    sees the same; errors name the level."""
    nestor(l1_home, "vm", "new", "p2", "--at", "l1", "--memory", "160M", timeout=180)
    try:
        assert show(l1_home, "l1/p2")["state"] == "off"
        nestor(l1_home, "vm", "start", "l1/p2", timeout=240)
        shown = show(l1_home, "l1/p2")
        assert (shown["name"], shown["state"], shown["accelerator"]) == ("p2", "running", "kvm"), shown
        assert json.loads(in_l1(l1_home, "nestor", "vm", "show", "p2", "-o", "json"))["state"] == "running"
        nestor(l1_home, "vm", "stop", "l1/p2", "--turn-off", timeout=180)
        assert show(l1_home, "l1/p2")["state"] == "off"

        nestor(l1_home, "switch", "new", "plan", "--type", "private", "--at", "l1", timeout=120)
        listed = json.loads(nestor(l1_home, "switch", "list", "--at", "l1", "-o", "json").stdout)
        assert "plan" in [s["name"] for s in listed]
        assert "plan" not in [s["name"] for s in json.loads(nestor(l1_home, "switch", "list", "-o", "json").stdout)]
        nestor(l1_home, "switch", "remove", "plan", "--at", "l1", timeout=120)

        missing = nestor(l1_home, "vm", "stop", "l1/l9", check=False)
        assert missing.returncode != 0 and "vm 'l1/l9': no VM 'l9' in l1" in missing.stderr, missing.stderr
    finally:
        nestor(l1_home, "vm", "remove", "l1/p2", "--force", check=False, timeout=180)
    assert "p2" not in [v["name"] for v in json.loads(in_l1(l1_home, "nestor", "vm", "list", "-o", "json"))]


@pytest.mark.timeout(900)
def test_events_of_l1s_vms_reach_l0s_stream_with_their_paths(l1_home: Path) -> None:
    """Issue 16: L0's /v1/events (the daemon on the home's socket) carries the events of l1's VMs
    with their paths, `l1/<name>`: l1's daemon keeps them in its ring, L0's reads it while it has
    subscribers (and never holds l1's channel long: the commands below share it)."""
    import queue
    import threading

    from nestor.client import Client

    seen: queue.Queue[dict[str, Any]] = queue.Queue()
    log: list[dict[str, Any]] = []

    done = threading.Event()

    def listen() -> None:
        try:
            with Client.local(l1_home, timeout=30) as api:
                for event in api.events(timeout=60):
                    if done.is_set():
                        return
                    seen.put(event)
        except Exception as exc:  # the test's wait says so (once the test is over: the daemon ended)
            if not done.is_set():
                seen.put({"type": "listener failed", "error": repr(exc)})

    threading.Thread(target=listen, name="events", daemon=True).start()

    def wait_for(what: str, match: Callable[[dict[str, Any]], bool], timeout: float = 240) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in log:
                if match(event):
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no event {what} within {timeout} s; seen: {log[-30:]}")
            try:
                log.append(seen.get(timeout=min(left, 5)))
            except queue.Empty:
                pass

    import os
    import sys

    # the CLI follows them too, only l1's and below (--at), one JSON object a line
    cli = subprocess.Popen([sys.executable, "-m", "nestor", "--home", str(l1_home), "events", "--at", "l1", "-o", "json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        wait_for("following l1", lambda e: e["type"] == "level" and e.get("at") == "l1" and e["state"] == "following")
        nestor(l1_home, "vm", "new", "ev2", "--at", "l1", "--memory", "160M", timeout=180)
        try:
            created = wait_for("created l1/ev2", lambda e: e.get("path") == "l1/ev2" and e.get("action") == "created")
            assert (created["type"], created["vm"], created["at"]) == ("vm", "ev2", "l1"), created
            nestor(l1_home, "vm", "start", "l1/ev2", timeout=240)
            wait_for("l1/ev2 running", lambda e: e.get("path") == "l1/ev2" and e.get("state") == "running")
            nestor(l1_home, "vm", "stop", "l1/ev2", "--turn-off", timeout=180)
            wait_for("l1/ev2 off", lambda e: e.get("path") == "l1/ev2" and e.get("state") == "off"
                     and e.get("was") == "running")
        finally:
            nestor(l1_home, "vm", "remove", "l1/ev2", "--force", check=False, timeout=180)
        wait_for("l1/ev2 removed", lambda e: e.get("path") == "l1/ev2" and e.get("state") == "removed")
        time.sleep(2)  # the CLI's copy of the last event is on its way too
    finally:
        done.set()
        cli.terminate()
        out, err = cli.communicate(timeout=30)
    by_cli = [json.loads(text) for text in out.splitlines()]
    assert {"running", "off", "removed"} <= {e.get("state") for e in by_cli if e.get("path") == "l1/ev2"}, (out, err)
    assert by_cli and all(e.get("at", "").split("/")[0] == "l1" for e in by_cli), out  # --at l1: nothing of L0's own
    # ev2 is never one of L0's VMs: every event naming it came from below, with its level
    assert all(e.get("at") == "l1" for e in log if e.get("vm") == "ev2"), log
    assert not [e for e in log if e["type"] == "listener failed"], log


HYPERV_LINE = "Hypervisor detected: Microsoft Hyper-V"


def test_l2_with_enlightenments_sees_hyperv(l1_home: Path) -> None:
    """Issue 19: an L2 under l1's KVM with `--enlightenments hyperv` sees Microsoft Hyper-V; where l1's
    accelerator cannot give the flags (its own host facts), the refusal names the flag."""
    check = json.loads(in_l1(l1_home, "nestor", "host", "check", "-o", "json"))
    accel = next(c["detail"] for c in check["checks"] if c["name"] == "accelerator").split(":")[0]
    # loglevel=7: the appliance boots `quiet`, which keeps the pr_info "Hypervisor detected" line off the console
    in_l1(l1_home, "nestor", "vm", "new", "hv2", "--memory", "192M", "--append", "loglevel=7")
    if accel != "kvm":
        result = in_l1(l1_home, "sh", "-c", "nestor vm set-processor hv2 --enlightenments hyperv 2>&1; echo rc=$?")
        assert "hv-vpindex" in result and "rc=0" not in result
        in_l1(l1_home, "nestor", "vm", "remove", "hv2")
        return
    in_l1(l1_home, "nestor", "vm", "set-processor", "hv2", "--enlightenments", "hyperv")
    l2 = json.loads(in_l1(l1_home, "nestor", "vm", "show", "hv2", "-o", "json"))
    assert l2["enlightenments"] == "hyperv"
    in_l1(l1_home, "nestor", "vm", "start", "hv2")
    try:
        in_l1(l1_home, "nestor", "vm", "log", "hv2", "--until", HYPERV_LINE, "--timeout", "150")
        cpu = json.loads(in_l1(l1_home, "nestor", "vm", "show", "hv2", "-o", "json"))["cpu_model"]
        assert cpu.startswith("host")
        facts = check["facts"]
        launch = in_l1(l1_home, "sh", "-c", "cat /var/lib/nestor/vms/*/launch.json")
        assert "hv-relaxed" in launch and "hv-stimer" in launch and "kvm=off" in launch
        assert ("hv-evmcs" in launch) == (facts["kvm_module"] == "kvm_intel")
    finally:
        in_l1(l1_home, "nestor", "vm", "remove", "hv2", "--force")
