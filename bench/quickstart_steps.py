"""The main job's wall time per step, with cached images (and the cold image builds once).

Run: .venv/bin/python bench/quickstart_steps.py [--runs 3] [--cold]
--cold first builds every image into an empty images directory and records those times.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record, scratch_home


def timed(argv: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, timeout=900)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold", action="store_true")
    args = parser.parse_args()
    results: dict[str, object] = {}
    if args.cold:
        cold = Path(tempfile.mkdtemp(prefix="nestor-cold-"))
        try:
            build = [sys.executable, "-m", "nestor", "--home", str(cold), "image", "build"]
            results["image_build_s"] = {
                "appliance_cold": round(timed([*build, "appliance"]), 1),
                "nested_host_cold": round(timed([*build, "nested-host"]), 1),
                "nested_host_cached": round(timed([*build, "nested-host"]), 2),
            }
        finally:
            shutil.rmtree(cold, ignore_errors=True)
    home = scratch_home()
    runs = []
    try:
        for _ in range(args.runs):
            result = subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), "quickstart", "-o", "json"],
                                    capture_output=True, text=True, timeout=900)
            if result.returncode != 0:
                raise SystemExit(f"quickstart failed ({result.returncode}):\n{result.stderr[-3000:]}")
            data = json.loads(result.stdout)
            assert data["ok"] is True
            runs.append({s["step"]: s["seconds"] for s in data["steps"]})
    finally:
        subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), "quickstart", "--teardown"],
                       capture_output=True, timeout=300)
        shutil.rmtree(home, ignore_errors=True)
    steps = list(runs[0])
    results["quickstart_median_s"] = {step: round(statistics.median(r[step] for r in runs), 1) for step in steps}
    results["quickstart_total_s"] = [round(sum(r.values()), 1) for r in runs]
    record("quickstart_steps", results)


if __name__ == "__main__":
    main()
