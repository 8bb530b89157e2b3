"""Host memory per VM besides QEMU: the daemon's RSS as VMs are added, and any other process.

The balancer of every dynamic VM and the serial-log cap of every VM of a home run in one daemon
(`nestor serve`, started on demand by `vm start`). This starts 1, then N appliance VMs
(dynamic memory, or static with --static), lets the daemon work on them, and records the
daemon's RSS each time (the cost per added VM is the slope) and the RSS of every other process
whose command line names the home besides the QEMUs and the daemon (a per-VM helper; expect none).
Run: .venv/bin/python bench/daemon_memory.py [--vms 4] [--settle 15] [--static]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import nestor, record, scratch_home

from nestor import paths
from nestor.engine import process
from nestor.service import daemon


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def others(home: Path, exclude: set[int]) -> list[int]:
    """Processes naming the home in their command line, other than `exclude` (QEMUs, daemon)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in exclude:
            try:
                if str(home).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=4)
    parser.add_argument("--settle", type=float, default=15.0)
    parser.add_argument("--static", action="store_true", help="static-memory VMs (no balancing, the log cap only)")
    args = parser.parse_args()
    home = scratch_home()
    points = []
    try:
        for index in range(args.vms):
            name = f"d{index}"
            nestor(home, "vm", "new", name, "--memory", "256M")
            if not args.static:
                nestor(home, "vm", "set-memory", name, "--dynamic", "on", "--minimum", "128M", "--maximum", "384M")
            nestor(home, "vm", "start", name)
            time.sleep(args.settle)
            pid = daemon.running_pid(paths.Home(home))
            assert pid is not None, "the daemon did not start"
            qemus = {q for q in (process.live_pid(d) for d in paths.Home(home).vms.iterdir()) if q is not None}
            extra = others(home, qemus | {pid})
            points.append({"vms": index + 1, "daemon_rss_mib": round(rss(pid) / 2**20, 1),
                           "other_processes": len(extra),
                           "other_rss_mib": round(sum(rss(p) for p in extra) / 2**20, 1)})
            print(points[-1], file=sys.stderr)
        first, last = points[0], points[-1]
        per_vm = (last["daemon_rss_mib"] - first["daemon_rss_mib"]) / max(1, last["vms"] - first["vms"])
        record("daemon_memory_static" if args.static else "daemon_memory", {
            "memory": "static" if args.static else "dynamic",
            "points": points,
            "per_added_vm_mib": round(per_vm, 2),
            "other_processes_per_vm": last["other_processes"] / last["vms"],
            "daemon_total_per_vm_mib_at_max": round(last["daemon_rss_mib"] / last["vms"], 1),
            "balancer_log_lines": sum(1 for line in paths.Home(home).daemon_log.read_text().splitlines()
                                      if "grow to" in line or "shrink to" in line),
        })
    finally:
        for index in range(args.vms):
            subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), "vm", "remove", f"d{index}", "--force"],
                           capture_output=True, timeout=60)
        daemon.stop(paths.Home(home))
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
