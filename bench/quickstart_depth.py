"""Depth-3 quickstart against depth-2 in one run, images cached: wall times and their ratio
(the goal: depth 3 ≤ 2.5× depth 2). Each depth runs `--runs` times, alternating, so a change in
the machine's load hits both; medians are compared.

Run: .venv/bin/python bench/quickstart_depth.py [--runs 1]
Writes bench/results/quickstart_depth.json; docs/performance.md quotes it.
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
from common import record, scratch_home

TIMEOUT = 3600


def quickstart(home: Path, depth: int) -> dict[str, object]:
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), "quickstart", "--depth", str(depth),
                             "-o", "json"], capture_output=True, text=True, timeout=TIMEOUT)
    wall = time.monotonic() - start
    if result.returncode != 0:
        raise SystemExit(f"quickstart --depth {depth} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    data = json.loads(result.stdout)
    assert data["ok"] is True
    return {"wall_s": round(wall, 1), "steps": {s["step"]: s["seconds"] for s in data["steps"]}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    home = scratch_home()
    runs: dict[int, list[dict[str, object]]] = {2: [], 3: []}
    try:
        # the images (and the payload) once, outside the timed runs
        subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), "image", "build", "nested-host"],
                       check=True, capture_output=True, timeout=TIMEOUT)
        for _ in range(args.runs):
            for depth in (2, 3):
                runs[depth].append(quickstart(home, depth))
    finally:
        subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), "quickstart", "--teardown"],
                       capture_output=True, timeout=300)
        shutil.rmtree(home, ignore_errors=True)
    median = {d: statistics.median(float(str(r["wall_s"])) for r in runs[d]) for d in runs}
    record("quickstart_depth", {
        "runs": runs,
        "depth2_median_s": median[2],
        "depth3_median_s": median[3],
        "ratio_depth3_to_depth2": round(median[3] / median[2], 2),
        "goal": "depth 3 <= 2.5x depth 2",
    })


if __name__ == "__main__":
    main()
