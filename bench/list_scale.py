"""`nestor vm list -o json` wall time with 1,000 VMs defined (none running).

Run: .venv/bin/python bench/list_scale.py [--vms 1000] [--runs 9]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record, scratch_home, summary

from nestor.images.appliance import build_appliance
from nestor.service import Service, VMSpec


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    home = scratch_home()
    build_appliance(home / "images", lambda line: print(line, file=sys.stderr))
    try:
        service = Service(home)
        start = time.monotonic()
        for index in range(args.vms):
            service.vm_new(VMSpec(f"vm{index}", memory=128 << 20))
        define_s = time.monotonic() - start
        argv = [sys.executable, "-m", "nestor", "--home", str(home), "vm", "list", "-o", "json"]
        baseline = [sys.executable, "-c", "pass"]
        samples, python_only = [], []
        for _ in range(args.runs):
            start = time.monotonic()
            out = subprocess.run(argv, capture_output=True, check=True, timeout=60).stdout
            samples.append(time.monotonic() - start)
            start = time.monotonic()
            subprocess.run(baseline, check=True, timeout=60)
            python_only.append(time.monotonic() - start)
        assert out.count(b'"name"') == args.vms
        record("list_scale", {"vms": args.vms, "define_all_s": round(define_s, 2), "list_s": summary(samples),
                              "python_startup_s": summary(python_only)})
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
