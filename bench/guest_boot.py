"""The Debian disk-image guest (issue 10) under nestor and under the same QEMU argv run raw:
boot to SSH ready, disk throughput of its qcow2 data disk, and checkpoint new/apply times.

One VM ('b', generation 1, 1 vCPU, 1G, a 256M qcow2 data disk, a static address on an internal
switch in a network namespace this bench made; nothing in the root namespace). A first boot
through nestor (not counted) lets cloud-init do its first-boot work, checks `nestor vm ssh`,
writes the data disk once (so later writes find its clusters allocated), times checkpoints of
the running VM and records nestor's QEMU argv (launch.json). With the VM stopped, its own files
(root overlay, data disk, cloud-init seed) are copied to a directory of the bench, and the argv
is rewritten to use that copy (bench/common.py relocate_argv: disks, sockets, pidfile and serial
log; nothing else changes). Then A and B alternate:

* A: ``nestor vm start b``, then ``ssh … true`` until it succeeds;
* B: the relocated argv run raw with ``ip netns exec NS`` (its tap made fresh on the bridge with
  the owner and IPv6 settings nestor gives it) until the same ``ssh … true`` succeeds.

Both probe with the very ssh argv `nestor vm ssh` runs (service/ssh.py), every 0.5 s. After each
boot ``dd`` with O_DIRECT runs inside the guest on /dev/vdb (write, then read); the guest is then
powered off through ACPI. Results: ratios of medians (nestor / raw) of one run, the load average
after every boot; bench/results/guest_boot.json (or --result NAME) is written after every A/B pair.
Every QEMU the bench started is reaped by PID (nestor's by its pidfile, the raw one by its Popen).
Run: .venv/bin/python bench/guest_boot.py [--runs 3]  (each boot takes minutes under TCG)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE_IMAGES, drive_files, record, relocate_argv, scratch_home, summary, tap_fds

from nestor import paths
from nestor.engine import process
from nestor.engine.qmp import Monitor
from nestor.images import debian
from nestor.net import netlink, sysctl, tapfd
from nestor.service import daemon
from nestor.service import ssh as vm_ssh

USER = "bench"
BOOT_TIMEOUT = 2400.0
DD_MIB = 128
POLL = 0.5


def log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def cli(home: Path, netns: str, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), "--netns", netns, *args],
                            capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"nestor {' '.join(args)}: {result.stderr.strip()}")
    return result


def sh(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(argv, 124, "", f"timed out after {exc.timeout} s")


def until_ok(attempt: list[str], started: float, alive: subprocess.Popen[bytes] | Path | None = None) -> float:
    """Run ``attempt`` every POLL s until it exits 0; the seconds since ``started``.
    ``alive``: the raw QEMU (Popen) or nestor's VM directory; stop at once if that QEMU is gone."""
    while True:
        if sh(attempt, timeout=60).returncode == 0:
            return time.monotonic() - started
        if isinstance(alive, subprocess.Popen) and alive.poll() is not None:
            raise RuntimeError(f"raw QEMU exited with {alive.returncode} before ssh answered")
        if isinstance(alive, Path) and process.live_pid(alive) is None:
            raise RuntimeError("nestor's QEMU is gone before ssh answered")
        if time.monotonic() - started > BOOT_TIMEOUT:
            raise TimeoutError(f"no ssh after {BOOT_TIMEOUT:.0f} s")
        time.sleep(POLL)


DD_RE = re.compile(r"^(\d+) bytes .* copied, ([\d.]+) s", re.M)


def dd(ssh: list[str], direction: str) -> float:
    """MB/s that dd reports for DD_MIB MiB with O_DIRECT on /dev/vdb, in the guest."""
    if direction == "write":
        command = f"sudo dd if=/dev/zero of=/dev/vdb bs=1M count={DD_MIB} oflag=direct"
    else:
        command = f"sudo dd if=/dev/vdb of=/dev/null bs=1M count={DD_MIB} iflag=direct"
    out = sh([*ssh, command], timeout=900)
    match = DD_RE.search(out.stderr + out.stdout)
    if out.returncode != 0 or match is None:
        raise RuntimeError(f"dd {direction}: {out.returncode} {out.stderr[-300:]}")
    return int(match.group(1)) / float(match.group(2)) / 1e6


def load() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def copy_like(src: Path, dst: Path) -> None:
    """A copy of ``src`` with its mode and owner (QEMU may run as nestor-qemu)."""
    shutil.copy2(src, dst)
    st = src.stat()
    os.chown(dst, st.st_uid, st.st_gid)


def make_raw_dir(vm_dir: Path, raw_dir: Path, argv: list[str]) -> list[str]:
    """A fresh copy of the VM's own files (those its -drive options name) in ``raw_dir``, and
    ``argv`` rewritten to use it."""
    shutil.rmtree(raw_dir, ignore_errors=True)
    for directory, like in ((raw_dir.parent, vm_dir.parent), (raw_dir, vm_dir)):
        directory.mkdir(exist_ok=True)
        st = like.stat()
        os.chmod(directory, st.st_mode & 0o7777)
        os.chown(directory, st.st_uid, st.st_gid)
    for path in drive_files(argv, vm_dir):
        target = raw_dir / path.relative_to(vm_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_like(path, target)
    return relocate_argv(argv, vm_dir, raw_dir)


def make_taps(netns: str, taps: list[str], bridge: str) -> list[int]:
    """Taps as nestor makes them at `vm start` (service/network.py attach, then net/tapfd.py):
    each opened by root for QEMU; their descriptors, in the order of the taps."""
    with netlink.session(netns) as ipr:
        for tap in taps:
            netlink.fresh_tap(ipr, tap, bridge, netns,
                              before_up=functools.partial(sysctl.write, netns, sysctl.tap_ipv6(tap)))
    return [tapfd.open_tap(tap, netns) for tap in taps]


def with_fds(argv: list[str], recorded: list[int], fds: list[int]) -> list[str]:
    """nestor's argv with its tap descriptor numbers replaced by this process's own."""
    table = dict(zip(recorded, fds, strict=True))
    return [re.sub(r"(?<=^tap,)(.*,)?fd=(\d+)", lambda m: f"{m.group(1) or ''}fd={table[int(m.group(2))]}", arg)
            if arg.startswith("tap,") else arg for arg in argv]


def delete_taps(netns: str, taps: list[str]) -> None:
    with netlink.session(netns) as ipr:
        for tap in taps:
            netlink.delete(ipr, tap)


def stop_raw(proc: subprocess.Popen[bytes], raw_dir: Path) -> None:
    """ACPI power-off through the raw QEMU's own QMP socket; SIGKILL if it does not end."""
    try:
        with Monitor(raw_dir / paths.QMP_SOCK, "b-raw") as mon:
            mon.powerdown()
        proc.wait(300)
    except Exception as exc:  # whatever failed, the process is ended below
        log(f"raw QEMU did not power off ({exc}); killing PID {proc.pid}")
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def reap(home: Path, raw: subprocess.Popen[bytes] | None) -> list[int]:
    """End every QEMU this bench started (by PID) and the home's daemon."""
    killed = []
    if raw is not None and raw.poll() is None:
        raw.kill()
        raw.wait()
        killed.append(raw.pid)
    daemon.stop(paths.Home(home), timeout=5)
    for vm_dir in sorted((home / "vms").glob("*")):
        pid = process.live_pid(vm_dir)
        if pid is not None:
            process.terminate(pid, timeout=3)
            killed.append(pid)
    return killed


def on_sigterm(main_pid: int, signum: int, frame: object) -> None:
    if os.getpid() != main_pid:
        os._exit(128 + signum)
    sys.exit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--result", default="guest_boot", help="bench/results/RESULT.json")
    args = parser.parse_args()
    # SIGTERM (timeout, a CI job cancelled) unwinds like Ctrl-C, so `finally` reaps and tears down;
    # only in this process: a forked child (pyroute2's NetNS proxy) that gets SIGTERM just exits.
    signal.signal(signal.SIGTERM, functools.partial(on_sigterm, os.getpid()))
    debian.build_debian(CACHE_IMAGES, debian.DebianRequest(), lambda line: print(line, file=sys.stderr))
    home = scratch_home()
    netns = f"nt-{secrets.token_hex(4)}"
    subnet = f"10.{80 + secrets.randbelow(40)}.{secrets.randbelow(250)}"
    address = f"{subnet}.10"
    keydir = home / "key"
    keydir.mkdir()
    sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keydir / "id_ed25519")])
    subprocess.run(["ip", "netns", "add", netns], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    raw_proc: subprocess.Popen[bytes] | None = None
    taps: list[str] = []
    loads: list[list[float]] = [load()]
    log(f"namespace {netns}, home {home}, load {loads[0]}")
    try:
        cli(home, netns, "switch", "new", "sw", "--type", "internal")
        cli(home, netns, "switch", "set-ip", "sw", f"{subnet}.1/24")
        t = time.monotonic()
        cli(home, netns, "vm", "new", "b", "--image", "debian-bookworm", "--memory", "1G", "--user", USER,
            "--ssh-key", str(keydir / "id_ed25519.pub"), "--switch", "sw")
        vm_new = time.monotonic() - t
        cli(home, netns, "adapter", "set", "b", "--ip", f"{address}/24", "--gateway", f"{subnet}.1",
            "--dns", f"{subnet}.1")
        cli(home, netns, "vm", "disk", "add", "b", "--name", "data", "--size", "256M")
        vm_dir = next((home / "vms").iterdir())
        raw_dir = home / "raw" / "b"
        target = vm_ssh.Target(address, "static", USER, keydir / "id_ed25519", netns)
        ssh = vm_ssh.ssh_argv(target, home / vm_ssh.KNOWN_HOSTS, ["true"])[:-1]  # without the command

        # Warm-up boot (not counted): cloud-init's first boot, the data disk written once, checkpoints.
        started = time.monotonic()
        cli(home, netns, "vm", "start", "b")
        argv = json.loads((vm_dir / paths.LAUNCH).read_text())["argv"]  # removed when the VM stops
        first = until_ok([*ssh, "true"], started, vm_dir)
        waited = sh([*ssh, "cloud-init status --wait"], timeout=1800)
        cloud_init = time.monotonic() - started
        log(f"warm-up boot to ssh {first:.1f} s, cloud-init done {cloud_init:.1f} s: {waited.stdout.strip()}")
        via_nestor = cli(home, netns, "vm", "ssh", "b", "--", "uname", "-r", timeout=120)
        log(f"nestor vm ssh: {via_nestor.stdout.strip()}")
        dd(ssh, "write")
        checkpoint_new, checkpoint_apply = [], []
        for i in range(args.runs):
            sh([*ssh, f"echo {i} > ~/mark && sync"])
            t = time.monotonic()
            cli(home, netns, "vm", "checkpoint", "new", "b", f"c{i}", timeout=900)
            checkpoint_new.append(time.monotonic() - t)
            sh([*ssh, "echo changed > ~/mark && sync"])
            t = time.monotonic()
            cli(home, netns, "vm", "checkpoint", "apply", "b", f"c{i}", timeout=900)
            checkpoint_apply.append(time.monotonic() - t)
            mark = sh([*ssh, "cat ~/mark"]).stdout.strip()
            if mark != str(i):
                raise RuntimeError(f"checkpoint c{i} applied, but ~/mark is {mark!r}")
            cli(home, netns, "vm", "checkpoint", "remove", "b", f"c{i}", timeout=900)
        log(f"checkpoint new {checkpoint_new}, apply {checkpoint_apply}")
        cli(home, netns, "vm", "stop", "b", "--timeout", "300", timeout=400)

        # The raw run's own copy of the VM's files, taken with the VM stopped (the same state).
        raw_argv = make_raw_dir(vm_dir, raw_dir, argv)
        taps = [a["tap"] for a in json.loads(cli(home, netns, "adapter", "list", "b", "-o", "json").stdout)]
        fds = tap_fds(raw_argv)
        bridge = json.loads(cli(home, netns, "switch", "list", "-o", "json").stdout)[0]["bridge"]
        log(f"raw argv: {raw_argv}")

        boot_nestor: list[float] = []
        boot_raw: list[float] = []
        start_cli: list[float] = []  # `nestor vm start` until the CLI returns (QEMU's QMP listens)
        disk: dict[str, dict[str, list[float]]] = {"nestor": {"write": [], "read": []}, "raw": {"write": [], "read": []}}
        for run in range(args.runs):
            # A then B on odd runs, B then A on even ones: a load trend hits both alike.
            for side in (("nestor", "raw") if run % 2 == 0 else ("raw", "nestor")):
                started = time.monotonic()
                if side == "nestor":
                    cli(home, netns, "vm", "start", "b")
                    start_cli.append(time.monotonic() - started)
                    boot_nestor.append(until_ok([*ssh, "true"], started, vm_dir))
                else:
                    process.clean_runtime_files(raw_dir)
                    passed = make_taps(netns, taps, bridge)
                    try:
                        run_argv = with_fds(raw_argv, fds, passed)
                        raw_proc = subprocess.Popen(["ip", "netns", "exec", netns, *run_argv], stdin=subprocess.DEVNULL,
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                    start_new_session=True, pass_fds=passed)
                    finally:
                        for fd in passed:
                            os.close(fd)
                    boot_raw.append(until_ok([*ssh, "true"], started, raw_proc))
                for direction in ("write", "read"):
                    disk[side][direction].append(dd(ssh, direction))
                if side == "nestor":
                    cli(home, netns, "vm", "stop", "b", "--timeout", "300", timeout=400)
                else:
                    assert raw_proc is not None
                    stop_raw(raw_proc, raw_dir)
                    raw_proc = None
                    delete_taps(netns, taps)
                loads.append(load())
                log(f"run {run + 1} {side}: boot {(boot_nestor if side == 'nestor' else boot_raw)[-1]:.1f} s, "
                    f"dd write {disk[side]['write'][-1]:.1f} MB/s read {disk[side]['read'][-1]:.1f} MB/s, "
                    f"load {loads[-1]}")
            report(args.result, args.runs, vm_new, first, cloud_init, boot_nestor, boot_raw, start_cli, disk,
                   checkpoint_new, checkpoint_apply, loads, argv, raw_argv)
    finally:
        killed = reap(home, raw_proc)
        if killed:
            log(f"reaped QEMU PIDs {killed}")
        cli(home, netns, "vm", "remove", "b", "--force", check=False, timeout=120)
        with_taps = sh(["ip", "-n", netns, "-o", "link"]).stdout
        sh(["ip", "netns", "del", netns])
        log(f"namespace {netns} deleted ({len(with_taps.splitlines())} links were left in it)")
        if os.environ.get("BENCH_KEEP") is None:
            shutil.rmtree(home, ignore_errors=True)


def report(name: str, runs: int, vm_new: float, first: float, cloud_init: float, boot_nestor: list[float],
           boot_raw: list[float], start_cli: list[float], disk: dict[str, dict[str, list[float]]], checkpoint_new: list[float],
           checkpoint_apply: list[float], loads: list[list[float]], argv: list[str], raw_argv: list[str]) -> None:
    """Written after every A/B pair (a run cut short keeps what it measured)."""
    a, b = summary(boot_nestor), summary(boot_raw)
    disk_summary: dict[str, object] = {}
    for direction in ("write", "read"):
        n, r = summary(disk["nestor"][direction]), summary(disk["raw"][direction])
        disk_summary[direction] = {"nestor_mb_s": n, "raw_mb_s": r,
                                   "ratio_of_medians": round(n["median"] / r["median"], 3),
                                   "samples_nestor": [round(x, 1) for x in disk["nestor"][direction]],
                                   "samples_raw": [round(x, 1) for x in disk["raw"][direction]]}
    record(name, {
        "what": "Debian image (generation 1, 1 vCPU, 1G, TCG): boot to ssh ready from `vm start` / the raw "
                f"QEMU's exec; dd O_DIRECT {DD_MIB} MiB on a 256M qcow2 data disk; checkpoints of the running VM",
        "runs": runs, "runs_done": len(boot_raw), "vm_new_s": round(vm_new, 2),
        "first_boot_to_ssh_s": round(first, 1), "first_boot_cloud_init_done_s": round(cloud_init, 1),
        "boot_to_ssh": {"nestor_s": a, "raw_qemu_s": b, "ratio_of_medians": round(a["median"] / b["median"], 3),
                        "difference_s": round(a["median"] - b["median"], 2),
                        "samples_nestor": [round(x, 1) for x in boot_nestor],
                        "samples_raw": [round(x, 1) for x in boot_raw],
                        # run i boots nestor and raw back to back (order alternating): its own ratio
                        "pair_ratios": [round(n / r, 3) for n, r in zip(boot_nestor, boot_raw, strict=False)]},
        "vm_start_cli_s": [round(x, 2) for x in start_cli],
        "disk_dd": disk_summary,
        "checkpoint_running_1g": {"new_s": summary(checkpoint_new), "apply_s": summary(checkpoint_apply),
                                  "samples_new": [round(x, 2) for x in checkpoint_new],
                                  "samples_apply": [round(x, 2) for x in checkpoint_apply]},
        "load_average_1_5_15": loads,
        "argv": argv,
        "raw_argv": raw_argv,
    })


if __name__ == "__main__":
    main()
