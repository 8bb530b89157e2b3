"""100 libvirt hosts and 10,000 VMs on libvirt's test driver: placement and listing times.

Each host is a test:///PATH.xml <node> file (remote/testnode.py) with its CPU, memory, domain
capabilities (AMD, Intel, or AMD with nesting off) and its domains; every domain is one of
nestor's VMs (a remote_vms row with the domain's UUID), as if nestor had made them.

The test driver runs inside the nestor process, so these times are nestor's own cost plus
libvirt's client library, without any network: a real host adds one round trip per libvirt call
(see docs/scale.md).

Run: .venv/bin/python bench/scale_libvirt.py [--hosts 100] [--vms-per-host 100] [--runs 5]
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record, summary

from nestor.policy import placement
from nestor.remote import libvirt_engine, testnode
from nestor.remote.hosts import AUTO, Hosts
from nestor.service.types import VMSpec
from nestor.state import db

G = 1 << 30
KINDS = ("amd",) * 4 + ("intel",) * 4 + ("amd-nonested",) * 2


def timed(fn: object, runs: int) -> tuple[dict[str, float], object]:
    samples, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return summary(samples), result


def cli(home: Path, runs: int, *args: str) -> dict[str, float]:
    argv = [sys.executable, "-m", "nestor", "--home", str(home), *args]
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True, timeout=600)
        samples.append(time.perf_counter() - start)
    return summary(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--vms-per-host", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    top = Path(tempfile.mkdtemp(prefix="nestor-scale-"))
    home = top / "home"
    try:
        start = time.perf_counter()
        layout: list[tuple[str, str, list[testnode.SimDomain]]] = []
        for h in range(args.hosts):
            kind = KINDS[h % len(KINDS)]
            memory = rng.choice((256, 384, 512, 768, 1024)) * G
            nesting = kind != "amd-nonested"
            domains = [testnode.SimDomain(f"h{h}-vm{v}", str(uuid.UUID(int=rng.getrandbits(128))),
                                          rng.choice((1, 2, 4, 8)) * G, running=rng.random() < 0.6,
                                          nested=nesting and rng.random() < 0.3)
                       for v in range(args.vms_per_host)]
            path = top / f"host{h}.xml"
            path.write_text(testnode.node_xml(kind, memory, cpus=64, domains=domains))
            layout.append((f"host{h}", f"test://{path}", domains))
        write_s = time.perf_counter() - start

        conn = db.connect(home / "nestor.db")
        svc = Hosts(conn)
        start = time.perf_counter()
        for name, uri, _ in layout:
            svc.host_add(name, uri)
        add_s = time.perf_counter() - start
        start = time.perf_counter()
        conn.execute("BEGIN")
        for name, _, domains in layout:
            host = svc.hosts.get(name)
            for dom in domains:
                conn.execute(
                    "INSERT INTO remote_vms (name, host_id, uuid, vcpus, memory, memory_maximum, nested)"
                    " VALUES (?,?,?,?,?,?,?)", (dom.name, host.id, dom.uuid, 1, dom.memory, dom.memory, int(dom.nested)))
        conn.execute("COMMIT")
        record_s = time.perf_counter() - start
        vms = args.hosts * args.vms_per_host

        libvirt_engine.disconnect_all()
        start = time.perf_counter()
        for _, uri, _ in layout:  # the test driver parses the host's <node> file (10,000 domains in all)
            libvirt_engine.connect(uri)
        connect_s = time.perf_counter() - start
        libvirt_engine.disconnect_all()
        fresh = Hosts(conn)
        start = time.perf_counter()
        views = fresh.host_list()
        host_list_cold_s = time.perf_counter() - start
        assert len(views) == args.hosts and all(v.reachable for v in views)
        assert sum(v.vms or 0 for v in views) == vms
        host_list, _ = timed(fresh.host_list, args.runs)
        candidates_s, candidates = timed(fresh.candidates, args.runs)
        cands = list(candidates)  # type: ignore[call-overload]
        place_pure, chosen = timed(lambda: placement.place(cands, 4 * G, nested=True), max(args.runs, 100))
        vm_list, listed = timed(fresh.vm_list, args.runs)
        assert len(listed) == vms  # type: ignore[arg-type]
        running = sum(1 for info in listed if info.state == "running")  # type: ignore[attr-defined]
        new_samples = []
        for i in range(args.runs * 4):
            start = time.perf_counter()
            fresh.vm_new(VMSpec(f"new{i}", host=AUTO, memory=4 * G, nested=True))
            new_samples.append(time.perf_counter() - start)
        tree_s, tree = timed(fresh.host_trees, args.runs)

        cli_runs = max(1, args.runs // 2)
        results = {
            "hosts": args.hosts, "vms": vms, "vms_running": running,
            "host_kinds": {k: sum(1 for h in range(args.hosts) if KINDS[h % len(KINDS)] == k) for k in set(KINDS)},
            "driver": "libvirt test driver (in-process), libvirt-python + libvirt 9.0",
            "setup_s": {"write_node_files": round(write_s, 2), "host_add_all": round(add_s, 2),
                        "record_vms": round(record_s, 2)},
            "in_process_s": {
                "open_connections_cold": round(connect_s, 3),
                "host_list_cold": round(host_list_cold_s, 3),
                "host_list": host_list,
                "placement_probe_and_choose": candidates_s,
                "placement_choose_only": place_pure,
                "vm_list": vm_list,
                "vm_new_auto_nested": summary(new_samples),
                "tree": tree_s,
            },
            "placed_on": chosen.host if isinstance(chosen, placement.Placement) else None,
            "cli_s": {
                "host_list_json": cli(home, cli_runs, "host", "list", "-o", "json"),
                "vm_list_json": cli(home, cli_runs, "vm", "list", "-o", "json"),
                "tree_json": cli(home, cli_runs, "tree", "-o", "json"),
                "vm_new_auto_nested": cli(home, 1, "vm", "new", "cli0", "--host", "auto", "--nested", "--memory", "4G"),
            },
        }
        assert isinstance(tree, list) and len(tree) == args.hosts
        record("scale_libvirt", results)
    finally:
        libvirt_engine.disconnect_all()
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
