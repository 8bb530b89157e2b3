"""`nestor image build debian` cold and cached, and the disk overlay a VM gets on an image.

* cold: a scratch home with an empty image store, the whole CLI run (mmdebstrap, disk, build VM
  for GRUB, qcow2). Minutes; ``--cold-runs`` (default 1) because each one fetches and unpacks
  every package again.
* cached: the CLI run against the test cache where the image exists (inputs hash matches).
* overlay: ``disks.create_overlay`` (``qemu-img create -b``) on the cached image, and the whole
  ``nestor vm new --image`` (overlay, cloud-init seed, rows).
Run: .venv/bin/python bench/image_build.py [--runs 3] [--cold-runs 1] [--no-cold]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE_IMAGES, record, scratch_home, summary

from nestor.images import debian, store
from nestor.service import disks


def timed_cli(home: Path, *args: str) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), *args], check=True,
                   capture_output=True, text=True, timeout=3600)
    return time.monotonic() - started


def load() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold-runs", type=int, default=1)
    parser.add_argument("--no-cold", action="store_true")
    args = parser.parse_args()
    loads = [load()]
    debian.build_debian(CACHE_IMAGES, debian.DebianRequest(), lambda line: print(line, file=sys.stderr))

    cached: list[float] = []
    home = scratch_home()
    try:
        for _ in range(args.runs):
            cached.append(timed_cli(home, "image", "build", "debian"))
        stored = store.find(CACHE_IMAGES, "debian-bookworm")
        assert stored is not None
        overlay = []
        for i in range(args.runs):
            target = home / f"overlay-{i}.qcow2"
            started = time.monotonic()
            disks.create_overlay(stored, target, None)
            overlay.append(time.monotonic() - started)
        vm_new = [timed_cli(home, "vm", "new", f"v{i}", "--image", "debian-bookworm", "--no-ssh-key",
                             "--no-network")
                  for i in range(args.runs)]
        loads.append(load())
    finally:
        for i in range(args.runs):
            subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), "vm", "remove", f"v{i}"],
                           capture_output=True, timeout=120, check=False)
        shutil.rmtree(home, ignore_errors=True)

    cold: list[float] = []
    if not args.no_cold:
        for _ in range(args.cold_runs):
            scratch = Path(tempfile.mkdtemp(prefix="nestor-bench-cold-"))
            try:
                cold.append(timed_cli(scratch, "image", "build", "debian"))
                loads.append(load())
            finally:
                shutil.rmtree(scratch, ignore_errors=True)

    record("image_build", {
        "what": "image build debian (bookworm, default packages, 8G): cold in an empty store and cached; "
                "the root overlay (qemu-img create -b) and the whole `vm new --image`",
        "cold_s": summary(cold) if cold else None, "samples_cold": [round(x, 1) for x in cold],
        "cached_s": summary(cached), "samples_cached": [round(x, 2) for x in cached],
        "overlay_s": summary(overlay), "samples_overlay": [round(x, 3) for x in overlay],
        "vm_new_s": summary(vm_new), "samples_vm_new": [round(x, 2) for x in vm_new],
        "load_average_1_5_15": loads,
    })


if __name__ == "__main__":
    main()
