"""The Debian disk-image guest (issue 10) under nestor and under the same QEMU argv run raw:
boot to SSH ready, disk throughput of its qcow2 data disk, and checkpoint new/apply times.

One VM ('b', generation 1, 1G, a 256M qcow2 data disk, a static address on an internal switch
in a network namespace this bench made). A first boot through nestor (not counted) lets
cloud-init do its first-boot work, writes the data disk once (so later writes find its
clusters allocated) and times checkpoints of the running VM. Then A and B alternate:

* A: ``nestor vm start b``, then ``nestor vm ssh b -- true`` until it succeeds;
* B: the argv of nestor's launch record (launch.json) run raw in the same namespace (its tap
  made fresh on the bridge, as nestor does) until the same ``ssh … true`` succeeds.

Both then run ``dd`` with O_DIRECT inside the guest on /dev/vdb (write, then read) and power
the guest off through ACPI. Results: ratios of medians (nestor / raw) of one run.
Run: .venv/bin/python bench/guest_boot.py [--runs 3]  (each boot takes minutes under TCG)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE_IMAGES, raw_argv, record, scratch_home, summary

from nestor import paths
from nestor.engine import process
from nestor.engine.qmp import Monitor
from nestor.images import debian
from nestor.net import netlink
from nestor.service import ssh as vm_ssh

USER = "bench"
BOOT_TIMEOUT = 2400.0
DD_MIB = 128


def cli(home: Path, netns: str, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), "--netns", netns, *args],
                            capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"nestor {' '.join(args)}: {result.stderr.strip()}")
    return result


def sh(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def until_ok(attempt: list[str], started: float) -> float:
    """Run ``attempt`` every second until it exits 0; the seconds since ``started``."""
    while True:
        if sh(attempt, timeout=60).returncode == 0:
            return time.monotonic() - started
        if time.monotonic() - started > BOOT_TIMEOUT:
            raise TimeoutError(f"no ssh after {BOOT_TIMEOUT:.0f} s")
        time.sleep(1)


DD_RE = re.compile(r"^(\d+) bytes .* copied, ([\d.]+) s", re.M)


def dd(ssh: list[str], direction: str) -> float:
    """MB/s that dd reports for 128 MiB with O_DIRECT on /dev/vdb, in the guest."""
    if direction == "write":
        command = f"sudo dd if=/dev/zero of=/dev/vdb bs=1M count={DD_MIB} oflag=direct"
    else:
        command = f"sudo dd if=/dev/vdb of=/dev/null bs=1M count={DD_MIB} iflag=direct"
    out = sh([*ssh, command], timeout=600)
    match = DD_RE.search(out.stderr + out.stdout)
    if out.returncode != 0 or match is None:
        raise RuntimeError(f"dd {direction}: {out.returncode} {out.stderr[-300:]}")
    return int(match.group(1)) / float(match.group(2)) / 1e6


def load() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    debian.build_debian(CACHE_IMAGES, debian.DebianRequest(), lambda line: print(line, file=sys.stderr))
    home = scratch_home()
    netns = f"nt-{secrets.token_hex(4)}"
    subnet = f"10.{80 + secrets.randbelow(40)}.{secrets.randbelow(250)}"
    address = f"{subnet}.10"
    keydir = home / "key"
    keydir.mkdir()
    sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keydir / "id_ed25519")])
    sh(["ip", "netns", "add", netns])
    sh(["ip", "-n", netns, "link", "set", "lo", "up"])
    raw_proc: subprocess.Popen[bytes] | None = None
    loads: list[list[float]] = [load()]
    try:
        cli(home, netns, "switch", "new", "sw", "--type", "internal")
        cli(home, netns, "switch", "set-ip", "sw", f"{subnet}.1/24")
        cli(home, netns, "vm", "new", "b", "--image", "debian-bookworm", "--memory", "1G", "--user", USER,
            "--ssh-key", str(keydir / "id_ed25519.pub"), "--switch", "sw")
        cli(home, netns, "adapter", "set", "b", "--ip", f"{address}/24", "--gateway", f"{subnet}.1",
            "--dns", f"{subnet}.1")
        cli(home, netns, "vm", "disk", "add", "b", "--name", "data", "--size", "256M")
        vm_dir = next((home / "vms").iterdir())
        target = vm_ssh.Target(address, "static", USER, keydir / "id_ed25519", netns)
        raw_ssh = vm_ssh.ssh_argv(target, home / vm_ssh.KNOWN_HOSTS, ["true"])[:-1]  # without the command
        nestor_ssh = [sys.executable, "-m", "nestor", "--home", str(home), "--netns", netns, "vm", "ssh", "b", "--"]

        # Warm-up boot (not counted): cloud-init's first boot, the data disk written once, checkpoints.
        started = time.monotonic()
        cli(home, netns, "vm", "start", "b")
        first = until_ok([*nestor_ssh, "true"], started)
        sh([*raw_ssh, "cloud-init status --wait"], timeout=900)
        print(f"warm-up boot to ssh {first:.1f} s, cloud-init done {time.monotonic() - started:.1f} s", file=sys.stderr)
        dd(raw_ssh, "write")
        launch = json.loads((vm_dir / "launch.json").read_text())  # removed when the VM stops
        argv = raw_argv(launch["argv"])
        taps = re.findall(r"tap,id=net\d+,ifname=([^,]+)", " ".join(argv))
        bridge = json.loads(cli(home, netns, "switch", "list", "-o", "json").stdout)[0]["bridge"]
        checkpoint_new, checkpoint_apply = [], []
        for i in range(args.runs):
            sh([*raw_ssh, f"echo {i} > ~/mark && sync"])
            t = time.monotonic()
            cli(home, netns, "vm", "checkpoint", "new", "b", f"c{i}", timeout=900)
            checkpoint_new.append(time.monotonic() - t)
            sh([*raw_ssh, "echo changed > ~/mark && sync"])
            t = time.monotonic()
            cli(home, netns, "vm", "checkpoint", "apply", "b", f"c{i}", timeout=900)
            checkpoint_apply.append(time.monotonic() - t)
            mark = sh([*raw_ssh, "cat ~/mark"]).stdout.strip()
            if mark != str(i):
                raise RuntimeError(f"checkpoint c{i} applied, but ~/mark is {mark!r}")
            cli(home, netns, "vm", "checkpoint", "remove", "b", f"c{i}", timeout=900)
        print(f"checkpoint new {checkpoint_new}, apply {checkpoint_apply}", file=sys.stderr)
        cli(home, netns, "vm", "stop", "b", "--timeout", "300", timeout=400)

        boot_nestor, boot_raw = [], []
        disk: dict[str, dict[str, list[float]]] = {"nestor": {"write": [], "read": []}, "raw": {"write": [], "read": []}}
        for run in range(args.runs):
            # A: through nestor.
            started = time.monotonic()
            cli(home, netns, "vm", "start", "b")
            boot_nestor.append(until_ok([*nestor_ssh, "true"], started))
            for direction in ("write", "read"):
                disk["nestor"][direction].append(dd(raw_ssh, direction))
            cli(home, netns, "vm", "stop", "b", "--timeout", "300", timeout=400)
            loads.append(load())
            # B: the same argv, raw.
            process.clean_runtime_files(vm_dir)
            started = time.monotonic()
            with netlink.session(netns) as ipr:
                for tap in taps:
                    netlink.fresh_tap(ipr, tap, bridge, netns)
            raw_proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            boot_raw.append(until_ok([*raw_ssh, "true"], started))
            for direction in ("write", "read"):
                disk["raw"][direction].append(dd(raw_ssh, direction))
            with Monitor(vm_dir / paths.QMP_SOCK, "b") as mon:
                mon.powerdown()
            try:
                raw_proc.wait(300)
            except subprocess.TimeoutExpired:
                raw_proc.kill()
                raw_proc.wait()
            raw_proc = None
            with netlink.session(netns) as ipr:
                for tap in taps:
                    netlink.delete(ipr, tap)
            loads.append(load())
            print(f"run {run + 1}: nestor {boot_nestor[-1]:.1f} s, raw {boot_raw[-1]:.1f} s", file=sys.stderr)
            report(args.runs, first, boot_nestor, boot_raw, disk, checkpoint_new, checkpoint_apply, loads, argv)
    finally:
        if raw_proc is not None:
            raw_proc.kill()
            raw_proc.wait()
        cli(home, netns, "vm", "remove", "b", "--force", check=False, timeout=120)
        sh(["ip", "netns", "del", netns])
        if os.environ.get("BENCH_KEEP") is None:
            shutil.rmtree(home, ignore_errors=True)


def report(runs: int, first: float, boot_nestor: list[float], boot_raw: list[float],
           disk: dict[str, dict[str, list[float]]], checkpoint_new: list[float], checkpoint_apply: list[float],
           loads: list[list[float]], argv: list[str]) -> None:
    """Written after every A/B pair (a run cut short keeps what it measured)."""
    a, b = summary(boot_nestor), summary(boot_raw)
    disk_summary: dict[str, object] = {}
    for direction in ("write", "read"):
        n, r = summary(disk["nestor"][direction]), summary(disk["raw"][direction])
        disk_summary[direction] = {"nestor_mb_s": n, "raw_mb_s": r,
                                   "ratio_of_medians": round(n["median"] / r["median"], 3),
                                   "samples_nestor": [round(x, 1) for x in disk["nestor"][direction]],
                                   "samples_raw": [round(x, 1) for x in disk["raw"][direction]]}
    record("guest_boot", {
        "what": "Debian image (generation 1, 1 vCPU, 1G, TCG): boot to ssh ready; dd O_DIRECT "
                f"{DD_MIB} MiB on a 256M qcow2 data disk; checkpoints of the running VM",
        "runs": runs, "runs_done": len(boot_raw), "first_boot_to_ssh_s": round(first, 1),
        "boot_to_ssh": {"nestor_s": a, "raw_qemu_s": b, "ratio_of_medians": round(a["median"] / b["median"], 3),
                        "difference_s": round(a["median"] - b["median"], 2),
                        "samples_nestor": [round(x, 1) for x in boot_nestor],
                        "samples_raw": [round(x, 1) for x in boot_raw]},
        "disk_dd": disk_summary,
        "checkpoint_running_1g": {"new_s": summary(checkpoint_new), "apply_s": summary(checkpoint_apply),
                                  "samples_new": [round(x, 2) for x in checkpoint_new],
                                  "samples_apply": [round(x, 2) for x in checkpoint_apply]},
        "load_average_1_5_15": loads,
        "argv": argv,
    })


if __name__ == "__main__":
    main()
