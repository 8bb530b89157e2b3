"""Nested levels through their API, and the quickstart, as ratios to a raw appliance boot.

In one run: the raw-QEMU boot time of the appliance (its argv from a nestor VM's launch.json,
started with subprocess.Popen), then `nestor quickstart --keep` (its total), then on the kept
l1: API calls through the VM channel (list l1's VMs) and `nestor tree` over L0→L1→L2.
Run: .venv/bin/python bench/nested_api.py [--raw-runs 5] [--calls 30] [--trees 5]
"""

from __future__ import annotations

import argparse
import json
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
from nestor.images.appliance import BOOT_LINE


def raw_boots(home: Path, runs: int) -> list[float]:
    nestor(home, "vm", "new", "raw", "--memory", "256M")
    nestor(home, "vm", "start", "raw")
    vm_dir = next((home / "vms").iterdir())
    argv = raw_argv(json.loads((vm_dir / paths.LAUNCH).read_text())["argv"])
    nestor(home, "vm", "remove", "raw", "--force")
    vm_dir.mkdir(parents=True, exist_ok=True)
    log = vm_dir / paths.SERIAL_LOG
    samples = []
    try:
        for _ in range(runs):
            offset = log.stat().st_size if log.exists() else 0
            process.clean_runtime_files(vm_dir)
            start = time.monotonic()
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                samples.append(wait_for(log, BOOT_LINE, offset) - start)
            finally:
                proc.kill()
                proc.wait()
    finally:
        shutil.rmtree(vm_dir, ignore_errors=True)
    return samples


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--raw-runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--trees", type=int, default=5)
    args = parser.parse_args()
    home = scratch_home()
    try:
        raw = raw_boots(home, args.raw_runs)
        result = subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), "quickstart", "--keep", "-o", "json"],
                                capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise SystemExit(f"quickstart failed ({result.returncode}):\n{result.stderr[-3000:]}")
        qs = json.loads(result.stdout)
        steps = {s["step"]: s["seconds"] for s in qs["steps"]}
        total = sum(seconds for step, seconds in steps.items() if step != "teardown")

        from nestor.quickstart import netns_for
        from nestor.service import Service
        from nestor.service.channel import client

        service = Service(home, netns=netns_for(home))
        calls = []
        with client(service.core, "l1", timeout=30) as l1:
            names = [vm.name for vm in l1.vm_list()]
            for _ in range(args.calls):
                start = time.monotonic()
                l1.vm_list()
                calls.append(time.monotonic() - start)
        connects = []
        for _ in range(5):  # a call with its own channel session (connect, sync, call)
            start = time.monotonic()
            with client(service.core, "l1", timeout=30) as l1:
                l1.vm_list()
            connects.append(time.monotonic() - start)
        trees = []
        for _ in range(args.trees):
            start = time.monotonic()
            tree = subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), "tree", "-o", "json"],
                                  capture_output=True, text=True, timeout=120, check=True)
            trees.append(time.monotonic() - start)
        depth = json.loads(tree.stdout)["vms"][0]["children"][0]["name"]
        raw_median = statistics.median(raw)
        record("nested_api", {
            "raw_appliance_boot_s": summary(raw),
            "quickstart_steps_s": steps,
            "quickstart_total_s": round(total, 2),
            "quickstart_ratio_to_raw_boot": round(total / raw_median, 2),
            "l1_vms": names,
            "nested_call_s": {**summary(calls), "p90": percentile(calls, 0.9)},
            "nested_call_with_session_s": summary(connects),
            "tree_cli_s": summary(trees),
            "tree_reached": depth,
        })
    finally:
        subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), "quickstart", "--teardown"],
                       capture_output=True, timeout=300)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
