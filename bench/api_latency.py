"""API latency and load: `nestor serve` on a unix socket with 1,000 VMs defined (none running).

1. Listing the 1,000 VMs: GET /v1/vms (HTTP + JSON decode) and the typed client's vm_list()
   (+ decoding into VMInfo), p50/p99, against the in-process Service.vm_list() in the same run
   (the ratio is what compares across machines).
2. Load: CLIENTS concurrent clients (threads, one connection each) for DURATION seconds, each
   request a GET /v1/vms/NAME of a random VM, every tenth the full list; every answer must be
   a 200 with the expected body (any error is counted and fails the run).

Run: .venv/bin/python bench/api_latency.py [--vms 1000] [--requests 200] [--clients 50] [--duration 30]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record, scratch_home

from nestor.client import Client
from nestor.images.appliance import build_appliance
from nestor.service import Service, VMSpec


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    cut = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50_ms": round(cut[49] * 1000, 2), "p99_ms": round(cut[98] * 1000, 2),
            "min_ms": round(ordered[0] * 1000, 2), "max_ms": round(ordered[-1] * 1000, 2), "n": len(ordered)}


def start_daemon(home: Path, sock: Path) -> subprocess.Popen[bytes]:
    with open(home / "serve.err", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "nestor", "--home", str(home), "serve", "--socket", str(sock)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if sock.exists():
            try:
                with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://nestor") as http:
                    if http.get("/v1/host", timeout=30).status_code == 200:
                        return proc
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit(f"nestor serve did not come up: {(home / 'serve.err').read_text()[-2000:]}")


def timed(fn: object, runs: int) -> list[float]:
    assert callable(fn)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def load(sock: Path, vms: int, clients: int, duration: float) -> dict[str, object]:
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        rng = random.Random(index)
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://nestor", timeout=60) as http:
            count = 0
            while not stop.is_set():
                count += 1
                whole = count % 10 == 0
                name = f"vm{rng.randrange(vms)}"
                start = time.perf_counter()
                try:
                    response = http.get("/v1/vms" if whole else f"/v1/vms/{name}")
                    ok = response.status_code == 200 and (
                        len(response.json()) == vms if whole else response.json()["name"] == name)
                    problem = None if ok else f"{response.status_code} {response.text[:200]}"
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                latencies[index].append(time.perf_counter() - start)
                if problem:
                    with lock:
                        errors.append(problem)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(duration)
    stop.set()
    for thread in threads:
        thread.join(120)
    elapsed = time.monotonic() - began
    every = [s for per in latencies for s in per]
    return {"clients": clients, "duration_s": round(elapsed, 1), "requests": len(every),
            "requests_per_s": round(len(every) / elapsed, 1), "errors": len(errors), "first_errors": errors[:5],
            "latency": percentiles(every), "mix": "GET /v1/vms/NAME, every tenth GET /v1/vms (all)"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0)
    args = parser.parse_args()
    home = scratch_home()
    run = Path(tempfile.mkdtemp(prefix="nt-bench-", dir="/tmp"))
    sock = run / "api.sock"
    build_appliance(home / "images", lambda line: print(line, file=sys.stderr))
    proc = None
    loadavg_before = os.getloadavg()[0]  # other work on the machine skews every figure: recorded
    try:
        service = Service(home)
        for index in range(args.vms):
            service.vm_new(VMSpec(f"vm{index}", memory=128 << 20))
        proc = start_daemon(home, sock)
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://nestor", timeout=60) as http, \
                Client(socket=sock) as api:
            assert len(http.get("/v1/vms").json()) == args.vms and len(api.vm_list()) == args.vms
            assert len(service.vm_list()) == args.vms
            for _ in range(5):  # warm up all three
                http.get("/v1/vms").json()
                api.vm_list()
                service.vm_list()
            in_process, raw, typed = [], [], []
            for _ in range(args.requests):  # interleaved, so drift hits all three alike
                in_process += timed(service.vm_list, 1)
                raw += timed(lambda: http.get("/v1/vms").json(), 1)
                typed += timed(api.vm_list, 1)
        listing = {"in_process_service": percentiles(in_process), "api_http_json": percentiles(raw),
                   "api_typed_client": percentiles(typed)}
        base = listing["in_process_service"]["p50_ms"]
        ratios = {"api_http_json_p50_over_in_process": round(listing["api_http_json"]["p50_ms"] / base, 2),
                  "api_typed_client_p50_over_in_process": round(listing["api_typed_client"]["p50_ms"] / base, 2)}
        loaded = load(sock, args.vms, args.clients, args.duration)
        alive = proc.poll() is None
        record("api_latency", {"vms": args.vms, "list": listing, "ratio": ratios, "load": loaded,
                               "daemon_alive_after_load": alive, "loadavg_1min_before": round(loadavg_before, 2),
                               "loadavg_1min_after": round(os.getloadavg()[0], 2)})
        if loaded["errors"] or not alive:
            raise SystemExit("errors under load (see first_errors)")
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(15)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
