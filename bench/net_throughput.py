"""TCP throughput to L0 from L1 (bridged, guard on and off) and from L2 (behind l1's NAT).

It keeps a quickstart (l1 on an internal switch in the quickstart's namespace, l2 behind NAT in
l1), streams zeros with busybox nc into a sink on the L0 switch address, and records MiB/s. The
guard on/off pair is the A/B ratio: the same path with and without the nft MAC filter.
Everything stays in the quickstart's namespace; it is torn down at the end.

Run: .venv/bin/python bench/net_throughput.py [--mib 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import nestor, record, scratch_home

from nestor.quickstart import L0_ADDRESS, netns_for

PORT = 5201
SINK = Path(__file__).resolve().parent / "sink.py"


def stream(mib: int) -> str:
    """busybox nc: the only sender the L2 appliance has (its copy loop, not the path, limits it)."""
    return f"dd if=/dev/zero bs=64k count={mib * 16} 2>/dev/null | nc {L0_ADDRESS} {PORT}"


def python_stream(mib: int) -> list[str]:
    """python3 in l1: 4 MiB sendall()s, close to what the path itself carries (like iperf3)."""
    code = (f"import socket; s = socket.create_connection(({L0_ADDRESS!r}, {PORT})); b = bytes(4 << 20); "
            f"[s.sendall(b) for _ in range({max(mib // 4, 1)})]; s.close()")
    return ["python3", "-c", code]


def measure(ns: str, runs: int, send: list[str], home: Path) -> list[float]:
    sink = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(SINK), L0_ADDRESS, str(PORT), str(runs)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None
        sink.stdout.readline()  # listening
        rates = []
        for _ in range(runs):
            nestor(home, "vm", "exec", *send)
            rates.append(float(json.loads(sink.stdout.readline())["mib_per_s"]))
        return rates
    finally:
        sink.kill()
        sink.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    home = scratch_home()
    ns = netns_for(home)
    try:
        nestor(home, "quickstart", "--keep")
        l1_nc = ["l1", "--timeout", "300", "--", "sh", "-c", stream(args.mib)]
        l1_py = ["l1", "--timeout", "300", "--", *python_stream(args.mib)]
        results: dict[str, object] = {}
        results["l1_to_l0_nc_mib_s"] = measure(ns, args.runs, l1_nc, home)
        guard_on, guard_off = [], []
        for _ in range(args.runs):  # A/B alternating: the nft MAC guard on, then off
            guard_on += measure(ns, 1, l1_py, home)
            nestor(home, "--netns", ns, "adapter", "set", "l1", "--mac-spoofing", "on")
            guard_off += measure(ns, 1, l1_py, home)
            nestor(home, "--netns", ns, "adapter", "set", "l1", "--mac-spoofing", "off")
        results["l1_to_l0_python_guard_on_mib_s"] = guard_on
        results["l1_to_l0_python_guard_off_mib_s"] = guard_off
        results["guard_on_over_off_ratio"] = round(statistics.median(guard_on) / statistics.median(guard_off), 3)
        # L2 has no agent: a second L2 in l1 runs the stream from its --run script.
        script = f"#!/bin/sh\nsleep 1\nfor i in $(seq {args.runs}); do {stream(args.mib)}; done\necho bench-done\n"
        nestor(home, "vm", "exec", "l1", "--", "sh", "-c", f"printf '%s' '{script}' > /tmp/bench.sh")
        sink = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(SINK), L0_ADDRESS, str(PORT),
                                 str(args.runs)], stdout=subprocess.PIPE, text=True)
        try:
            assert sink.stdout is not None
            sink.stdout.readline()
            nestor(home, "vm", "exec", "l1", "--", "nestor", "vm", "new", "l2b", "--memory", "192M", "--switch",
                   "nat0", "--append", "nestor.dhcp=1", "--run", "/tmp/bench.sh")
            nestor(home, "vm", "exec", "l1", "--", "nestor", "vm", "start", "l2b")
            results["l2_nat_to_l0_nc_mib_s"] = [float(json.loads(sink.stdout.readline())["mib_per_s"])
                                            for _ in range(args.runs)]
        finally:
            sink.kill()
            sink.wait()
        results["mib_per_transfer"] = args.mib
        record("net_throughput", results)
    finally:
        subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), "quickstart", "--teardown"],
                       capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
