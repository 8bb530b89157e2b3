"""API calls to a level below, and `tree` over every level (issue 16's numbers), in one run.

For each depth asked (`--depths 2,3`): `nestor quickstart --depth N --keep` from cached images,
then, through the home's daemon on its unix socket (the one `vm start` brings up; started here
if none runs):
- GET /v1/vms/l1 (a VM of L0, on L0: the comparison) and GET /v1/vms/lN?at=l1/…/lN-1 (the
  deepest VM, answered by the nestor of its parent level through every channel above it),
  `--calls` times each, alternating;
- GET /v1/tree (every level) `--trees` times, and the CLI's `nestor tree -o json` and
  `nestor vm show l1/…/lN -o json` (a new process each, as a user runs them);
then `quickstart --teardown` before the next depth. A depth whose quickstart fails is recorded
with its error (the run goes on with the next). Goals: an API call to an L2 from L0 ≤ 0.1 s
median; `tree` over three levels ≤ 1 s. Everything is torn down in `finally`, VMs reaped by pid.

Run: .venv/bin/python bench/levels.py [--depths 2,3] [--calls 30] [--trees 5]
Writes bench/results/levels.json; docs/performance.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import LoadSampler, nestor_timed, new_netns, reap, record, scratch_home, summary
from lab import quickstart_netns
from nested_api import percentile

from nestor import paths
from nestor.service import daemon


class CallFailed(Exception):
    pass


def timed_get(http: httpx.Client, url: str) -> tuple[float, Any]:
    start = time.perf_counter()
    response = http.get(url, timeout=180)
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise CallFailed(f"GET {url}: {response.status_code} after {elapsed:.1f} s: {response.text[:1000]}")
    return elapsed, response.json()


def first_answer(http: httpx.Client, url: str, within: float) -> tuple[Any, list[str]]:
    """The first 200 of `url` (a level that just came up may be slow at first), and the failures before it."""
    deadline = time.monotonic() + within
    failures: list[str] = []
    while True:
        try:
            return timed_get(http, url)[1], failures
        except CallFailed as exc:
            failures.append(str(exc))
            if time.monotonic() > deadline:
                raise
            time.sleep(5)


def stats(samples: list[float]) -> dict[str, float]:
    return {**summary(samples), "p90": percentile(samples, 0.9)}


def tree_depth(node: dict[str, Any]) -> int:
    """How many levels below this one answered in a tree (its deepest reachable VM's level)."""
    deepest = 0
    for child in node.get("vms", node.get("children", [])):
        if child.get("reachable") is False:
            continue
        deepest = max(deepest, int(child["level"]), tree_depth(child))
    return deepest


def one_depth(home: Path, ns: str, depth: int, calls: int, trees: int, out: dict[str, Any]) -> None:
    """Fills `out` as it goes (a failure part-way leaves what was measured)."""
    wall, result = nestor_timed(home, "quickstart", "--depth", str(depth), "--keep", "-o", "json",
                                netns=ns, timeout=3600, check=False)
    if result.returncode != 0:
        out.update(quickstart_ok=False, quickstart_wall_s=round(wall, 1), error=(result.stdout + result.stderr)[-3000:])
        return
    qs = json.loads(result.stdout)
    out.update(quickstart_ok=True, quickstart_wall_s=round(wall, 1),
               quickstart_steps_s={s["step"]: s["seconds"] for s in qs["steps"]})
    home_paths = paths.Home(home)
    daemon.ensure_running(home_paths)
    socket = home_paths.api_socket
    parent = "/".join(f"l{k}" for k in range(1, depth))
    deepest = f"l{depth}"
    top, below, listed = [], [], []
    show_url, list_url = f"/v1/vms/{deepest}?at={parent}", f"/v1/vms?at={parent}"
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), base_url="http://nestor") as http:
        timed_get(http, "/v1/vms/l1")  # warm: the daemon's first request imports its handlers
        shown, failures = first_answer(http, show_url, within=600)
        out["failures_before_first_answer"] = failures
        for _ in range(calls if depth == 2 else min(calls, 10)):  # deeper levels: slower, fewer samples
            top.append(timed_get(http, "/v1/vms/l1")[0])
            below.append(timed_get(http, show_url)[0])
            listed.append(timed_get(http, list_url)[0])
        api_trees = []
        for _ in range(trees):
            elapsed, tree = timed_get(http, "/v1/tree")
            api_trees.append(elapsed)
    cli_trees, cli_shows = [], []
    for _ in range(trees):
        elapsed, result = nestor_timed(home, "tree", "-o", "json", timeout=300)
        cli_trees.append(elapsed)
        cli_tree = json.loads(result.stdout)
        elapsed, result = nestor_timed(home, "vm", "show", f"{parent}/{deepest}", "-o", "json", timeout=300)
        cli_shows.append(elapsed)
    out.update({
        "daemon_socket": str(socket),
        "call_l0_vm_s": stats(top),
        "call_deepest_vm_s": stats(below),
        "call_deepest_path": f"GET {show_url}",
        "call_list_parent_s": stats(listed),
        "call_list_parent_path": f"GET {list_url}",
        "deepest_state": shown.get("state"),
        "api_tree_s": stats(api_trees),
        "api_tree_levels": tree_depth(tree),
        "cli_tree_s": stats(cli_trees),
        "cli_tree_levels": tree_depth(cli_tree),
        "cli_vm_show_deepest_s": stats(cli_shows),
    })


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--depths", default="2,3", help="quickstart depths to measure, in order")
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--trees", type=int, default=5)
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    os.environ["NESTOR_DEFAULT_SWITCH"] = "none"
    home = scratch_home()
    ns = new_netns("nblvl")
    namespaces = [ns, *filter(None, [quickstart_netns(home)])]
    data: dict[str, Any] = {"depths": {}}
    try:
        with LoadSampler() as load:
            try:
                load.mark("images")
                nestor_timed(home, "image", "build", "nested-host", timeout=3600)
                for depth in depths:
                    load.mark(f"depth {depth}")
                    out: dict[str, Any] = {}
                    data["depths"][str(depth)] = out
                    try:
                        one_depth(home, ns, depth, args.calls, args.trees, out)
                    except (CallFailed, SystemExit, httpx.HTTPError) as exc:
                        out["error"] = f"{type(exc).__name__}: {exc}"[-3000:]
                    finally:
                        nestor_timed(home, "quickstart", "--teardown", netns=ns, check=False, timeout=600)
                        daemon.stop(paths.Home(home), timeout=10)
            finally:
                load.mark("end")
                data["load_average"] = load.to_json()
    finally:
        killed = reap(home, namespaces)
        if killed:
            print(f"reaped by pid: {killed}", file=sys.stderr)
        shutil.rmtree(home, ignore_errors=True)
        record("levels", {"goals": goals(data["depths"]), **data})


def goals(depths: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Issue 16's goals, for every depth whose quickstart came up."""
    out: dict[str, Any] = {}
    for depth, at in depths.items():
        if not at.get("quickstart_ok") or "call_deepest_vm_s" not in at:
            continue
        call = at["call_deepest_vm_s"]["median"]
        out[f"API call to L{depth} from L0 <= 0.1 s median"] = {"median_s": round(call, 4), "met": call <= 0.1}
        cli, api = at["cli_tree_s"]["median"], at["api_tree_s"]["median"]
        out[f"tree over L0..L{depth} <= 1 s"] = {"cli_median_s": round(cli, 3), "api_median_s": round(api, 3),
                                                 "levels_answered": at["cli_tree_levels"], "met": cli <= 1.0}
    return out


if __name__ == "__main__":
    main()
