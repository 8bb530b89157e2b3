"""Boot overhead of nestor: `nestor vm start` → appliance boot line, against the same QEMU argv run raw.

A and B alternate in one run; the result is the ratio of medians (and their difference).
Run: .venv/bin/python bench/boot_overhead.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import nestor, raw_argv, record, scratch_home, summary, wait_for

from nestor import paths
from nestor.engine import process
from nestor.images.appliance import BOOT_LINE, build_appliance


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    home = scratch_home()
    build_appliance(home / "images", lambda line: print(line, file=sys.stderr))
    try:
        nestor(home, "vm", "new", "b", "--memory", "256M")
        vm_dir = next((home / "vms").iterdir())
        log = vm_dir / paths.SERIAL_LOG
        with_nestor, raw = [], []
        argv: list[str] = []
        for _ in range(args.runs):
            # A: through nestor (CLI start-up, state, lock, QMP wait included).
            offset = log.stat().st_size if log.exists() else 0
            start = time.monotonic()
            subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), "vm", "start", "b"], check=True,
                           capture_output=True, timeout=60)
            with_nestor.append(wait_for(log, BOOT_LINE, offset) - start)
            argv = raw_argv(json.loads((vm_dir / "launch.json").read_text())["argv"])
            nestor(home, "vm", "stop", "b", "--turn-off")
            # B: the very same QEMU argv, started raw.
            offset = log.stat().st_size if log.exists() else 0
            process.clean_runtime_files(vm_dir)
            start = time.monotonic()
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            raw.append(wait_for(log, BOOT_LINE, offset) - start)
            proc.kill()
            proc.wait()
        a, b = summary(with_nestor), summary(raw)
        record("boot_overhead", {
            "nestor_s": a, "raw_qemu_s": b,
            "ratio_of_medians": round(a["median"] / b["median"], 3),
            "difference_ms": round((a["median"] - b["median"]) * 1000, 1),
            "samples_nestor": [round(x, 3) for x in with_nestor], "samples_raw": [round(x, 3) for x in raw],
            "argv": argv,
        })
    finally:
        subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), "vm", "remove", "b", "--force"],
                       capture_output=True, timeout=60)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
