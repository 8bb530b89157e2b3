"""Boot overhead of nestor: `nestor vm start` → appliance boot line, against the same QEMU argv run raw.

A (through nestor) and B (raw) run in pairs, the order alternating from pair to pair (AB, BA,
…), so load from other work on the machine falls on both sides alike. The result is the median
of the paired ratios A/B and of the paired differences A − B (robust on a shared machine), with
the ratio of medians for comparison with older results, and the 1-minute load average seen
before each pair.
Run: .venv/bin/python bench/boot_overhead.py [--runs 21] [--name boot_overhead] [--in-process]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import nestor, raw_argv, record, scratch_home, summary, wait_for

from nestor import paths
from nestor.engine import process
from nestor.images.appliance import BOOT_LINE, build_appliance


def through_nestor(home: Path, vm_dir: Path, log: Path, argv: list[str], in_process: bool = False) -> float:
    """`nestor vm start b` (a new CLI process: start-up, state, lock, the wait for QEMU's user);
    QEMU's argv (launch.json) into `argv`. `in_process`: an environment that differs from the
    daemon's at every run, so the CLI never hands the start to the warm daemon (warm_start.py)."""
    env = {**os.environ, "NESTOR_BENCH_RUN": str(time.monotonic_ns())} if in_process else None
    offset = log.stat().st_size if log.exists() else 0
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), "vm", "start", "b"], check=True,
                   capture_output=True, timeout=120, env=env)
    took = wait_for(log, BOOT_LINE, offset) - start
    argv[:] = raw_argv(json.loads((vm_dir / "launch.json").read_text())["argv"])
    nestor(home, "vm", "stop", "b", "--turn-off")
    return took


def raw(argv: list[str], vm_dir: Path, log: Path) -> float:
    """The very same QEMU argv, started raw."""
    offset = log.stat().st_size if log.exists() else 0
    process.clean_runtime_files(vm_dir)
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    took = wait_for(log, BOOT_LINE, offset) - start
    proc.kill()
    proc.wait()
    process.clean_runtime_files(vm_dir)
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=21, help="pairs")
    parser.add_argument("--name", default="boot_overhead", help="bench/results/NAME.json")
    parser.add_argument("--in-process", action="store_true",
                        help="the CLI starts QEMU itself, never through the home's warm daemon")
    args = parser.parse_args()
    home = scratch_home()
    build_appliance(home / "images", lambda line: print(line, file=sys.stderr))
    try:
        nestor(home, "vm", "new", "b", "--memory", "256M")
        vm_dir = next((home / "vms").iterdir())
        log = vm_dir / paths.SERIAL_LOG
        argv: list[str] = []
        through_nestor(home, vm_dir, log, argv)  # warm-up: page cache, the QEMU option probe, the home's daemon
        with_nestor: list[float] = []
        without: list[float] = []
        loads: list[float] = []
        for run in range(args.runs):
            loads.append(os.getloadavg()[0])
            if run % 2 == 0:
                with_nestor.append(through_nestor(home, vm_dir, log, argv, args.in_process))
                without.append(raw(argv, vm_dir, log))
            else:
                without.append(raw(argv, vm_dir, log))
                with_nestor.append(through_nestor(home, vm_dir, log, argv, args.in_process))
            print(f"pair {run + 1}: nestor {with_nestor[-1]:.3f} s, raw {without[-1]:.3f} s, "
                  f"load {loads[-1]:.2f}", file=sys.stderr)
        a, b = summary(with_nestor), summary(without)
        ratios = [x / y for x, y in zip(with_nestor, without, strict=True)]
        deltas = [(x - y) * 1000 for x, y in zip(with_nestor, without, strict=True)]
        record(args.name, {
            "pairs": args.runs,
            "path": "in-process CLI" if args.in_process else "CLI through the warm daemon when it runs (warm_start.py)",
            "median_paired_ratio": round(statistics.median(ratios), 3),
            "median_paired_difference_ms": round(statistics.median(deltas), 1),
            "ratio_of_medians": round(a["median"] / b["median"], 3),
            "difference_ms": round((a["median"] - b["median"]) * 1000, 1),
            "loadavg_1min": {"median": round(statistics.median(loads), 2), "min": round(min(loads), 2),
                             "max": round(max(loads), 2)},
            "nestor_s": a, "raw_qemu_s": b,
            "samples_nestor": [round(x, 3) for x in with_nestor], "samples_raw": [round(x, 3) for x in without],
            "paired_ratios": [round(x, 3) for x in ratios],
            "argv": argv,
        })
    finally:
        subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), "vm", "remove", "b", "--force"],
                       capture_output=True, timeout=60)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
