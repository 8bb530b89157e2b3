"""Host memory per dynamic-memory VM besides QEMU: the daemon's RSS as VMs are added.

The balancer of every dynamic VM of a home runs in one daemon (`nestor serve`, started on
demand by `vm start`). This starts 1, then N dynamic-memory appliance VMs, lets the balancer
work on them, and records the daemon's RSS each time; the cost per added VM is the slope.
Run: .venv/bin/python bench/daemon_memory.py [--vms 4] [--settle 15]
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
from nestor.service import daemon


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=4)
    parser.add_argument("--settle", type=float, default=15.0)
    args = parser.parse_args()
    home = scratch_home()
    points = []
    try:
        for index in range(args.vms):
            name = f"d{index}"
            nestor(home, "vm", "new", name, "--memory", "256M")
            nestor(home, "vm", "set-memory", name, "--dynamic", "on", "--minimum", "128M", "--maximum", "384M")
            nestor(home, "vm", "start", name)
            time.sleep(args.settle)
            pid = daemon.running_pid(paths.Home(home))
            assert pid is not None, "the daemon did not start"
            points.append({"dynamic_vms": index + 1, "daemon_rss_mib": round(rss(pid) / 2**20, 1)})
            print(points[-1], file=sys.stderr)
        first, last = points[0], points[-1]
        per_vm = (last["daemon_rss_mib"] - first["daemon_rss_mib"]) / max(1, last["dynamic_vms"] - first["dynamic_vms"])
        record("daemon_memory", {
            "points": points,
            "per_added_vm_mib": round(per_vm, 2),
            "daemon_total_per_vm_mib_at_max": round(last["daemon_rss_mib"] / last["dynamic_vms"], 1),
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
